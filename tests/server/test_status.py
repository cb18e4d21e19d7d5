"""GET /status: the campaign at a glance, and numbers that match the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from lm.fake_llm_server import FakeLLMServer

from hyper_ls_backend.cli import main
from hyper_ls_backend.server.status import agreement, agreement_by_tag, ai_label_accuracy

from .harness import (
    PROJECT,
    ScriptedJudge,
    annotation_event,
    judge_settings,
    make_settings,
    serve,
    setup_body,
    task,
    tasks_created,
)


def test_status_reports_budget_routes_agreement_spend_and_features(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.5, hyper_human_label_cost=2.0)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created([task(i, "a") for i in range(1, 21)]))
        humans = [i for i in range(1, 21) if model.store.decision(PROJECT, i).route == "human"]
        for n, task_id in enumerate(humans):
            choice = "A-is-clearly-better" if n % 2 else "B-is-clearly-better"
            client.post(
                "/webhook",
                json=annotation_event("ANNOTATION_CREATED", 500 + task_id, task_id, choice),
            )
        body = client.get("/status", params={"project": PROJECT}).json()
        prior_version = model.pipeline.routers.prior.version
        missing = client.get("/status", params={"project": 999})
    routes = body["routes"]
    assert routes["received"] == 20
    assert routes["ai"] + routes["human"] + routes["audit"] + routes["forced"] == 20
    assert body["budget"] == {"share": 0.5, "allowed": 10, "used": 10, "left": 0}
    measured = body["judge_agreement"]
    assert measured["n"] == len(humans) == 10 and measured["agree"] == 5
    low, high = measured["ci95"]
    assert low < 0.5 < high
    assert body["spend"]["human_cost_saved_usd"] == routes["ai"] * 2.0
    assert body["spend"]["input_tokens"] > 0
    assert body["top_features"] and {"feature", "weight"} <= set(body["top_features"][0])
    assert body["model_version"] == prior_version and body["router_versions"] == []
    assert missing.status_code == 404


def test_status_command_prints_the_backends_answer_or_a_clear_error(capsys) -> None:
    code = main(["status", "--project", "1", "--backend-url", "http://127.0.0.1:9"])
    assert code == 2
    assert "cannot reach the backend" in capsys.readouterr().err


def test_agreement_by_tag_covers_every_labelled_task_in_each_dimension() -> None:
    labelled = [
        ({"category": "math", "safety_concern": "high"}, ("A", "A")),
        ({"category": "math"}, ("A", "B")),
        ({"category": "code"}, ("tie", "tie")),
        ({}, ("B", "B")),
    ]
    table = agreement_by_tag(labelled)
    assert list(table) == ["category", "safety_concern"]
    assert {value: (a.n, a.agree) for value, a in table["category"].items()} == {
        "code": (1, 1),
        "math": (2, 1),
        "unknown": (1, 1),
    }
    assert {value: (a.n, a.agree) for value, a in table["safety_concern"].items()} == {
        "high": (1, 1),
        "unknown": (3, 2),
    }
    assert agreement_by_tag([]) == {}


def test_ai_label_accuracy_scales_the_audit_interval_or_says_there_are_no_audits() -> None:
    none_yet = ai_label_accuracy(40, agreement([]))
    assert none_yet.note == "no audits yet" and none_yet.expected_wrong_ci95 is None
    measured = agreement([("A", "A")] * 8 + [("A", "B")] * 2)
    estimate = ai_label_accuracy(40, measured)
    low, high = measured.ci95
    assert estimate.audits == measured and estimate.ai_labelled == 40
    assert estimate.expected_wrong_ci95 == pytest.approx((40 * (1 - high), 40 * (1 - low)))
    assert "10 audits" in estimate.note


def test_status_and_dashboard_refuse_a_project_id_no_database_holds(tmp_path: Path) -> None:
    """Found by the fuzz test: such an id reached SQLite and failed with a 500."""
    with serve(make_settings(tmp_path)) as (client, _):
        too_big = {"project": 2**63}
        answers = [client.get(path, params=too_big) for path in ("/status", "/dashboard")]
    assert [a.status_code for a in answers] == [422, 422]
    assert all("project" in str(a.json()["detail"]) for a in answers)
