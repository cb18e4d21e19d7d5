"""The learn flow in the backend: human labels -> background refit -> a new model version."""

from __future__ import annotations

from pathlib import Path

from lm.fake_llm_server import FakeLLMServer
from server.harness import (
    PROJECT,
    ScriptedJudge,
    annotation_event,
    judge_settings,
    predict_body,
    serve,
    setup_body,
    task,
    tasks_created,
)

N_TASKS = 160


def import_and_label(client) -> None:
    """Tasks alternate a consistent judge ("a", which says A) and an inconsistent one
    ("biased": A first in both orders, so a tie). Humans make the judge wrong exactly where
    it was consistent: the opposite of what the prior learned on MT-Bench."""
    tasks = [task(i, "a" if i % 2 else "biased") for i in range(1, N_TASKS + 1)]
    client.post("/webhook", json=tasks_created(tasks))
    for i in range(1, N_TASKS + 1):
        choice = "B-is-clearly-better" if i % 2 else "Tie"
        answer = client.post(
            "/webhook", json=annotation_event("ANNOTATION_CREATED", 1000 + i, i, choice)
        )
        assert answer.json()["status"].startswith("stored label"), answer.json()


def test_start_training_adopts_a_refit_that_measures_better_and_serves_its_version(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(
        tmp_path, llm.base_url, hyper_refit_every=10_000, hyper_prior_strength=10.0
    )
    with serve(settings) as (client, model):
        first = client.post("/setup", json=setup_body()).json()["model_version"]
        import_and_label(client)
        assert model.store.label_count(PROJECT) == N_TASKS
        answer = client.post(
            "/webhook", json={"action": "START_TRAINING", "project": {"id": PROJECT}}
        )
        assert answer.status_code == 200 and "refit" in answer.json()["status"]
        adopted = model.store.active_router(PROJECT)
        assert adopted is not None, "the refit was not adopted"
        assert adopted.quality["held_out_auc"] >= adopted.quality["current_held_out_auc"]
        second = client.post("/setup", json=setup_body()).json()["model_version"]
        assert second == adopted.version != first
        last = client.get("/status", params={"project": PROJECT}).json()["training"]["last"]
        assert last["adopted"] and last["n_labels"] == N_TASKS
        assert last["summary"].startswith(f"adopted {second} because it ranks the judge's errors")
        client.post("/webhook", json=tasks_created([task(5000, "a")]))
        assert model.store.decision(PROJECT, 5000).model_version == second


def test_every_n_new_labels_trigger_a_refit_and_a_refit_that_does_not_help_is_refused(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_refit_every=40)
    with serve(settings) as (client, model):
        first = client.post("/setup", json=setup_body()).json()["model_version"]
        tasks = [task(i, "a") for i in range(1, 41)]
        client.post("/webhook", json=tasks_created(tasks))
        answers = [
            client.post(
                "/webhook",
                json=annotation_event("ANNOTATION_CREATED", 2000 + i, i, "A-is-clearly-better"),
            ).json()["status"]
            for i in range(1, 41)
        ]
        assert [a.endswith("refit queued") for a in answers] == [False] * 39 + [True]
        # The judge was never wrong: nothing to learn, the prior stays, and the version
        # Label Studio shows with it; /status says why.
        assert model.store.active_router(PROJECT) is None
        assert client.post("/setup", json=setup_body()).json()["model_version"] == first
        body = client.get("/status", params={"project": PROJECT}).json()
    assert body["training"]["last"]["summary"] == (
        f"kept {first} because the judge was always right on the labelled tasks: "
        "nothing to learn yet"
    )
    assert [v["version"] for v in body["router_versions"]] == [first]


def test_a_refit_fires_once_every_n_labels_saved_since_the_last_refit(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    """Counted since the last refit, not as a multiple of the number of labels: a deleted
    label does not hold the next refit back, a changed one counts, and a refit from Start
    training starts the count again."""
    settings = judge_settings(tmp_path, llm.base_url, hyper_refit_every=3)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created([task(i, "a") for i in range(1, 7)]))

        def label(action: str, annotation: int, task_id: int) -> str:
            event = annotation_event(action, annotation, task_id, "A-is-clearly-better")
            return client.post("/webhook", json=event).json()["status"]

        deleted = {"action": "ANNOTATIONS_DELETED", "project": {"id": PROJECT}}
        statuses = [
            label("ANNOTATION_CREATED", 4001, 1),
            label("ANNOTATION_CREATED", 4002, 2),
            client.post("/webhook", json={**deleted, "annotations": [{"id": 4002}]}).json()[
                "status"
            ],
            label("ANNOTATION_CREATED", 4003, 3),  # 3 saved, 2 kept: a refit
            label("ANNOTATION_UPDATED", 4001, 1),
            client.post(
                "/webhook", json={"action": "START_TRAINING", "project": {"id": PROJECT}}
            ).json()["status"],
            label("ANNOTATION_CREATED", 4004, 4),
            label("ANNOTATION_CREATED", 4005, 5),
            label("ANNOTATION_UPDATED", 4004, 4),  # 3 since Start training: a refit
        ]
        refits = model.store.refits(PROJECT)
    queued = [status.endswith("refit queued") for status in statuses]
    assert queued == [False, False, False, True, False, False, False, False, True]
    assert [refit.n_labels for refit in refits] == [2, 2, 4]


def test_deleted_labels_leave_the_training_set(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_refit_every=10_000)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created([task(i, "a") for i in (1, 2, 3)]))
        for i in (1, 2, 3):
            event = annotation_event("ANNOTATION_CREATED", 3000 + i, i, "B-is-clearly-better")
            client.post("/webhook", json=event)
        assert len(model.store.labelled_comparisons(PROJECT)) == 3
        deleted = {"action": "ANNOTATIONS_DELETED", "project": {"id": PROJECT}}
        client.post("/webhook", json={**deleted, "annotations": [{"id": 3002}]})
        labelled = [row.record for row in model.store.labelled_comparisons(PROJECT)]
        assert sorted(record["id"] for record in labelled) == ["1", "3"]
        assert all(record["judge"]["label"] == "A" for record in labelled)


def test_audits_send_judge_bound_tasks_to_humans_within_the_budget_without_prefill(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.5, hyper_audit_share=1.0)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        tasks = [task(i, "a") for i in range(1, 21)]
        client.post("/webhook", json=tasks_created(tasks))
        decisions = [model.store.decision(PROJECT, i) for i in range(1, 21)]
        humans = [d for d in decisions if d.route == "human"]
        audits = [d for d in decisions if d.audit]
        assert len(humans) == 10 and audits and set(map(id, audits)) <= set(map(id, humans))
        assert all(d.reasons[0].startswith("audit:") for d in audits)
        results = client.post("/predict", json=predict_body(tasks)).json()["results"]
        for decision, result in zip(decisions, results, strict=True):
            if decision.audit:
                assert result == []


def test_no_audits_when_the_share_is_zero(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.5, hyper_audit_share=0.0)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created([task(i, "a") for i in range(1, 21)]))
        assert not any(model.store.decision(PROJECT, i).audit for i in range(1, 21))
