"""A quality target in the backend: audits calibrate, a refit's look certifies a threshold,
later imports are routed by it, and every look spends its share of the confidence once."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from lm.fake_llm_server import FakeLLMServer
from server.harness import (
    PROJECT,
    ScriptedJudge,
    annotation_event,
    judge_settings,
    serve,
    setup_body,
    task,
    tasks_created,
)

from hyper_ls_backend.core.policy import NOT_YET_CERTIFIED_REASON, Route
from hyper_ls_backend.jobs.certification import look_delta

WARMUP = 200
PLANS = ("a", "b", "a", "tie")
"""The judge says A, B, A, tie; humans agree with all but the ties (they say A)."""
HUMAN = {"a": "A-is-clearly-better", "b": "B-is-clearly-better", "tie": "A-is-clearly-better"}


def target_settings(tmp_path: Path, base_url: str, **overrides):
    return judge_settings(
        tmp_path,
        base_url,
        hyper_target_agreement=0.7,
        hyper_budget=0.6,
        hyper_warmup_audit_share=0.4,
        hyper_refit_every=100_000,
        **overrides,
    )


def import_tasks(client, first: int, n: int) -> list[int]:
    ids = list(range(first, first + n))
    tasks = [task(i, PLANS[i % len(PLANS)]) for i in ids]
    assert client.post("/webhook", json=tasks_created(tasks)).status_code == 200
    return ids


def label_audits(client, model, ids: list[int]) -> int:
    audited = [i for i in ids if model.store.decision(PROJECT, i).audit]
    for i in audited:
        choice = HUMAN[PLANS[i % len(PLANS)]]
        event = annotation_event("ANNOTATION_CREATED", 10_000 + i, i, choice)
        assert client.post("/webhook", json=event).json()["status"].startswith("stored label")
    return len(audited)


def status_of(client) -> dict:
    return client.get("/status", params={"project": PROJECT}).json()["quality_target"]


def start_training(client) -> None:
    answer = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": PROJECT}})
    assert answer.status_code == 200


def test_audits_calibrate_then_a_certified_threshold_routes_later_imports(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    with serve(target_settings(tmp_path, llm.base_url)) as (client, model):
        client.post("/setup", json=setup_body())
        warmup = import_tasks(client, 1, WARMUP)
        decisions = [model.store.decision(PROJECT, i) for i in warmup]
        audits = [d for d in decisions if d.audit]
        assert len(audits) >= 0.3 * WARMUP  # the warm-up audit share, not 5%
        ai = [d for d in decisions if d.route is Route.AI]
        assert ai and all(NOT_YET_CERTIFIED_REASON in d.reasons for d in ai)
        assert label_audits(client, model, warmup) == len(audits)
        before = status_of(client)
        assert not before["certified"] and before["audit_share"] == 0.4
        assert before["summary"].startswith("Not yet certified")

        start_training(client)
        (look,) = model.store.certifications(PROJECT)
        assert look.look == 1 and look.n_calibration == len(audits)
        assert look.delta == pytest.approx(look_delta(0.1, 1))
        assert look.threshold is not None, look.reason
        assert look.reason.startswith("certified (look 1")
        after = status_of(client)
        assert after["certified"] and after["threshold"] == look.threshold
        assert after["certified_agreement"] == look.lower_bound >= 0.7
        assert after["calibration"] == len(audits) and after["looks"] == 1
        assert after["summary"].startswith("Certified: the judge labels only tasks scoring")
        assert any(point["passed"] for point in after["curve"])

        later = import_tasks(client, 1_000, 100)
        routed = [model.store.decision(PROJECT, i) for i in later]
        for decision in routed:
            if decision.route is Route.AI:
                assert decision.score <= look.threshold
                assert decision.reasons[0].startswith("certified: scores ")
            elif not decision.audit:
                assert decision.score > look.threshold or decision.forced
        # after certification the audit share is the project's own again
        assert sum(d.audit for d in routed) < 0.3 * len(routed)


def test_a_look_is_taken_only_when_there_is_more_to_see_and_each_spends_less(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    with serve(target_settings(tmp_path, llm.base_url)) as (client, model):
        client.post("/setup", json=setup_body())
        first = import_tasks(client, 1, 60)
        label_audits(client, model, first)
        start_training(client)
        start_training(client)  # nothing new: no second look
        assert [c.look for c in model.store.certifications(PROJECT)] == [1]
        second = import_tasks(client, 500, 60)
        label_audits(client, model, second)
        start_training(client)
        looks = model.store.certifications(PROJECT)
        assert [c.look for c in looks] == [1, 2]
        assert looks[1].delta == pytest.approx(0.1 * 6 / (math.pi**2 * 4))
        assert looks[1].n_calibration > looks[0].n_calibration


def test_the_looks_spend_the_confidence_once_in_all():
    assert sum(look_delta(0.1, k) for k in range(1, 100_000)) == pytest.approx(0.1, rel=1e-4)


def test_without_a_target_there_is_no_look_and_no_calibrating(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    with serve(judge_settings(tmp_path, llm.base_url, hyper_refit_every=100_000)) as (
        client,
        model,
    ):
        client.post("/setup", json=setup_body())
        ids = import_tasks(client, 1, 40)
        label_audits(client, model, ids)
        start_training(client)
        assert model.store.certifications(PROJECT) == []
        assert not any(
            NOT_YET_CERTIFIED_REASON in model.store.decision(PROJECT, i).reasons for i in ids
        )


def test_a_certification_survives_a_restart(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = target_settings(tmp_path, llm.base_url)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        label_audits(client, model, import_tasks(client, 1, WARMUP))
        start_training(client)
        (look,) = model.store.certifications(PROJECT)
    with serve(settings) as (client, model):
        assert [c.threshold for c in model.store.certifications(PROJECT)] == [look.threshold]
        assert status_of(client)["certified"]
        (later,) = import_tasks(client, 3_000, 1)
        decision = model.store.decision(PROJECT, later)
        assert decision.audit or decision.reasons[0].startswith(
            ("certified: ", "above the certified threshold")
        )
