"""End-to-end fixtures: a real Label Studio server (see label_studio.py), the real backend
as a subprocess and a scripted fake judge for it (see backend.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from label_studio_sdk import LabelStudio
from pydantic import SecretStr

from e2e.backend import TEST_API_KEY, BackendProcess, ScriptedJudge, start_fake_judge
from e2e.label_studio import LabelStudioServer, label_studio, register_marker
from hyper_ls_backend.ls.setup import connect_project
from hyper_ls_backend.settings import Settings

__all__ = ["label_studio"]

CONFIG_5POINT = files("hyper_ls_backend.ls.configs") / "preference_5point.xml"
SLOW_REPLY_S = 3.0
"""How late the fake judge's "timeout" replies come: well past HYPER_JUDGE_TIMEOUT."""


def pytest_configure(config: pytest.Config) -> None:
    register_marker(config)


@pytest.fixture(scope="session")
def ls_client(label_studio: LabelStudioServer) -> LabelStudio:
    return LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key, timeout=60)


@pytest.fixture
def scripted_judge() -> Iterator[tuple[str, ScriptedJudge]]:
    """(base URL, responder) of a fake Anthropic API answering by the task's ``[judge:PLAN]``."""
    server, judge = start_fake_judge(SLOW_REPLY_S)
    yield server.base_url, judge
    server.stop()


StartBackend = Callable[..., BackendProcess]


@pytest.fixture
def start_backend(
    label_studio: LabelStudioServer,
    scripted_judge: tuple[str, ScriptedJudge],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[StartBackend]:
    """Start ``hyper-ls serve`` with the test environment; ``env`` overrides it.

    Every backend started is stopped at teardown; a failed test prints their logs.
    """
    started: list[BackendProcess] = []

    def start(**env: str) -> BackendProcess:
        base = {
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.api_key,
            "ANTHROPIC_API_KEY": TEST_API_KEY,
            "HYPER_JUDGE_BASE_URL": scripted_judge[0],
            "HYPER_JUDGE_MAX_ATTEMPTS": "3",
            "HYPER_JUDGE_TIMEOUT": "1",
            "HYPER_TAGGER": "false",
            "HYPER_BUDGET": "0.25",
            "HYPER_JUDGE_BATCH": "off",  # call by call unless a test batches
        }
        n = len(started)
        backend = BackendProcess(
            {**base, **env}, tmp_path / f"model_dir_{n}", tmp_path / f"backend_{n}.log"
        )
        started.append(backend)
        return backend.start()

    yield start
    for backend in started:
        backend.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for backend in started:
            print(f"--- {backend.log} ---\n{backend.logs()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


Connect = Callable[..., int]


@pytest.fixture
def connect(label_studio: LabelStudioServer, ls_client: LabelStudio) -> Iterator[Connect]:
    """Create a project with the shipped 5-point config and connect a backend to it, the way
    ``hyper-ls connect`` does; the projects are deleted at teardown."""
    projects: list[int] = []

    def make(backend: BackendProcess, title: str, auth: tuple[str, str] | None = None) -> int:
        settings = Settings(
            label_studio_url=label_studio.url,
            label_studio_api_key=SecretStr(label_studio.api_key),
            basic_auth_user=auth[0] if auth else None,
            basic_auth_pass=SecretStr(auth[1]) if auth else None,
        )
        project_id = connect_project(
            settings, backend.url, None, title, CONFIG_5POINT.read_text(encoding="utf-8")
        )
        projects.append(project_id)
        return project_id

    yield make
    for project_id in projects:
        ls_client.projects.delete(id=project_id)
