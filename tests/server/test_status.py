"""GET /status: the campaign at a glance, and numbers that match the database."""

from __future__ import annotations

from pathlib import Path

from lm.fake_llm_server import FakeLLMServer

from hyper_ls_backend.cli import main

from .harness import (
    PROJECT,
    ScriptedJudge,
    annotation_event,
    judge_settings,
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
    agreement = body["judge_agreement"]
    assert agreement["n"] == len(humans) == 10 and agreement["agree"] == 5
    low, high = agreement["ci95"]
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
