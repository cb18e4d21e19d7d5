"""The OpenAPI schema, fuzzed (schemathesis): no payload, valid or not, makes the backend
answer 5xx; every answer has a documented status, content type and shape; with basic auth
on, a request without valid credentials is refused."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from schemathesis.checks import positive_data_acceptance

from hyper_ls_backend.server.app import create_app

from .harness import make_settings, setup_body

AUTH = ("label-studio", "fuzz-pass")
OPERATIONS = [
    (method.upper(), path)
    for path, methods in create_app(make_settings(Path("unused"))).openapi()["paths"].items()
    for method in methods
]
SEMANTIC_CHECKS = {("POST", "/setup")}
"""Operations that rightly refuse some schema-valid payloads: any string fits the schema of
a label config, but only a preference config can be used (422 naming what is missing)."""


@pytest.fixture(params=[False, True], ids=["open", "basic-auth"])
def api(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Any, dict[str, str]]]:
    """(schema of a running app with a set-up project, headers that authenticate)."""
    auth = request.param
    app = create_app(
        make_settings(
            tmp_path,
            basic_auth_user=AUTH[0] if auth else None,
            basic_auth_pass=SecretStr(AUTH[1]) if auth else None,
        )
    )
    token = base64.b64encode(":".join(AUTH).encode()).decode()
    headers = {"Authorization": f"Basic {token}"} if auth else {}
    with TestClient(app) as client:  # runs the lifespan: the model, its store and queue
        assert client.post("/setup", json=setup_body(), headers=headers).status_code == 200
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
        declared = schema.raw_schema.get("components", {}).get("securitySchemes", {})
        assert ("HTTPBasic" in declared) == auth, "the schema must say when basic auth is needed"
        yield schema, headers


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_payload_makes_the_backend_fail_or_answer_off_schema(
    api: tuple[Any, dict[str, str]], method: str, path: str
) -> None:
    schema, headers = api
    excluded = [positive_data_acceptance] if (method, path) in SEMANTIC_CHECKS else []

    @given(case=schema[path][method].as_strategy())
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, excluded_checks=excluded)

    fuzz()
