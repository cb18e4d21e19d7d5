"""/webhook: acknowledgement, task import, idempotency, and human labels."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from lm.fake_llm_server import FakeLLMServer

from hyper_ls_backend.server.model import HyperModel

from .harness import (
    CONFIG_3WAY,
    CONFIG_5POINT,
    LS_KEY,
    PROJECT,
    FakeLabelStudio,
    ScriptedJudge,
    annotation_event,
    judge_settings,
    make_settings,
    serve,
    setup_body,
    task,
    tasks_created,
    wait_until,
)

# -- acknowledgement and import -------------------------------------------------------------


def decided(model: HyperModel) -> int:
    return sum(model.store.decision_counts().values())


def test_webhook_acknowledges_200_tasks_before_it_routes_them(
    tmp_path: Path, llm: FakeLLMServer
) -> None:
    """The acknowledgement does not wait for the judge: the 200 tasks need at least
    200 x 2 calls x 0.05 s / 16 in flight = 1.25 s of judging, and are still being routed
    when it arrives. (How fast it comes is measured, not asserted:
    ``benchmarks/import_latency.py``; Label Studio gives it 1 s.)"""
    judge = ScriptedJudge(delay=0.05)
    llm.responder = judge
    settings = judge_settings(tmp_path, llm.base_url)
    tasks = [task(i) for i in range(1, 201)]
    with serve(settings, immediate=False) as (client, model):
        client.post("/setup", json=setup_body())
        response = client.post("/webhook", json=tasks_created(tasks))
        assert response.status_code == 200, response.text
        assert decided(model) < 200, "the webhook waited for the routing"
        assert response.json()["status"] == "received 200 tasks"
        wait_until(lambda: decided(model) == 200, what="200 tasks routed")
        counts = model.store.decision_counts()
    assert sum(counts.values()) == 200
    assert len(judge.calls) == 200


def test_webhook_stores_the_tasks_before_enqueuing_them(tmp_path: Path) -> None:
    model = HyperModel.build(make_settings(tmp_path), immediate=False)
    model.setup(PROJECT, CONFIG_5POINT, None)
    seen: list[bool] = []
    original = model.queue.route

    def route(project_id: int, task_ids: list[int]) -> None:
        seen.extend(model.store.task(project_id, t) is not None for t in task_ids)
        original(project_id, task_ids)

    model.queue.route = route  # type: ignore[method-assign]
    from hyper_ls_backend.server.schemas import WebhookEvent

    event = WebhookEvent.model_validate(tasks_created([task(i) for i in range(1, 13)]))
    outcome = model.webhook(event)
    assert seen == [True] * 12
    assert outcome == "received 12 tasks"
    assert model.queue.pending() == 1  # one dispatch job, not run: no consumer was started


def test_each_webhooks_tasks_are_committed_when_it_is_acknowledged(tmp_path: Path) -> None:
    """Many webhooks at once share transactions; each is answered only after its own
    tasks are committed: another connection to the database sees them at that moment, as
    received or already recorded (one snapshot of both tables)."""
    settings = make_settings(tmp_path)
    database = f"file:{settings.model_dir / 'hyper.sqlite3'}?mode=ro"
    missing: dict[int, list[int]] = {}
    statuses: list[int] = []
    with serve(settings, immediate=False) as (client, _):
        client.post("/setup", json=setup_body())
        barrier = threading.Barrier(12)

        def send(c: int) -> None:
            ids = list(range(100 * c + 1, 100 * c + 21))
            barrier.wait()
            response = client.post("/webhook", json=tasks_created([task(i) for i in ids]))
            statuses.append(response.status_code)
            other = sqlite3.connect(database, uri=True, isolation_level=None)
            other.execute("begin")
            stored = {t for (t,) in other.execute("select task_id from tasks")}
            for (received,) in other.execute("select tasks from received_imports"):
                stored.update(t["id"] for t in json.loads(received))
            other.close()
            missing[c] = sorted(set(ids) - stored)

        threads = [threading.Thread(target=send, args=(c,)) for c in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 12
    assert missing == {c: [] for c in range(12)}


def test_webhook_for_an_unknown_project_sets_it_up_from_the_payloads_config(
    tmp_path: Path,
) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        response = client.post(
            "/webhook", json=tasks_created([task(1), task(2)], config=CONFIG_3WAY)
        )
        assert response.status_code == 200
        assert model.store.project(PROJECT).label_config == CONFIG_3WAY
        assert model.store.decision(PROJECT, 1).route == "human"


def test_webhook_for_an_unknown_project_without_a_config_is_ignored(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        response = client.post("/webhook", json=tasks_created([task(1)]))
        assert response.status_code == 200
        assert "never set up" in response.json()["status"]
        assert model.store.task(PROJECT, 1) is None


def test_duplicate_tasks_created_webhooks_make_one_decision_per_task(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url)
    tasks = [task(i) for i in range(1, 9)]
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        first = client.post("/webhook", json=tasks_created(tasks))
        second = client.post("/webhook", json=tasks_created(tasks))
        counts = model.store.decision_counts()
        sequences = sorted(model.store.decision(PROJECT, i).sequence for i in range(1, 9))
    assert first.status_code == second.status_code == 200
    assert sum(counts.values()) == 8
    assert sequences == list(range(1, 9))
    assert all(n == 2 for n in judge.calls.values()) and len(judge.calls) == 8


def test_concurrent_duplicate_tasks_created_webhooks_all_succeed(tmp_path: Path) -> None:
    tasks = [task(i) for i in range(1, 31)]
    with serve(make_settings(tmp_path), immediate=False) as (client, model):
        client.post("/setup", json=setup_body())
        statuses: list[int] = []

        def send() -> None:
            statuses.append(client.post("/webhook", json=tasks_created(tasks)).status_code)

        threads = [threading.Thread(target=send) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wait_until(lambda: decided(model) == 30, what="tasks routed")
        counts = model.store.decision_counts()
    assert statuses == [200] * 6
    assert counts == {(PROJECT, "human"): 30}


@pytest.mark.parametrize(
    "body",
    [
        {"action": "PROJECT_UPDATED", "project": {"id": PROJECT, "title": "x"}},
        {"action": "SOMETHING_NEW_IN_LS_2", "whatever": [1, 2]},
        # bulk annotations come from "Create annotations from predictions", not from people
        {
            "action": "ANNOTATIONS_CREATED",
            "project": {"id": PROJECT},
            "annotations": [{"id": 5, "task": 1, "result": []}],
        },
        {  # as Label Studio 1.23 posts it: lists under "annotation" and "task"
            "action": "ANNOTATIONS_CREATED",
            "project": {"id": PROJECT},
            "annotation": [{"id": 5, "task": 1, "result": []}],
            "task": [{"id": 1, "data": {"prompt": "p"}, "annotations": 1}],
        },
        {"action": "TASKS_DELETED", "project": {"id": PROJECT}, "tasks": [{"id": 1}]},
    ],
    ids=lambda body: body["action"],
)
def test_other_actions_are_acknowledged_and_ignored(tmp_path: Path, body: dict) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body())
        response = client.post("/webhook", json=body)
        assert model.store.decision_counts() == {}
    assert response.status_code == 200
    assert response.json()["status"].startswith("ignored")


def test_a_webhook_without_an_action_is_422(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, _):
        response = client.post("/webhook", json={"project": {"id": PROJECT}})
    assert response.status_code == 422
    assert "action" in str(response.json()["detail"])


def test_a_task_without_an_id_does_not_sink_the_rest_of_the_import(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body())
        body = tasks_created([task(1), {"data": {"prompt": "no id"}}, task(2)])
        response = client.post("/webhook", json=body)
        assert response.status_code < 500
        assert model.store.decision(PROJECT, 1) is not None
        assert model.store.decision(PROJECT, 2) is not None


# -- human labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "label", "strength"),
    [
        ("A-is-clearly-better", "A", "clear"),
        ("A-is-slightly-better", "A", "slight"),
        ("Tie", "tie", None),
        ("B-is-slightly-better", "B", "slight"),
        ("B-is-clearly-better", "B", "clear"),
    ],
)
def test_annotation_created_stores_the_five_point_choice_as_label_and_strength(
    tmp_path: Path, choice: str, label: str, strength: str | None
) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body(CONFIG_5POINT))
        response = client.post(
            "/webhook", json=annotation_event("ANNOTATION_CREATED", 11, 1, choice)
        )
        labels = model.store.human_labels(PROJECT)
    assert response.status_code == 200
    assert [(x.annotation_id, x.task_id, x.choice, x.label, x.strength) for x in labels] == [
        (11, 1, choice, label, strength)
    ]
    assert labels[0].annotator == 3


def test_three_way_labels_have_no_strength(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body(CONFIG_3WAY))
        client.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 11, 1, "B"))
        (label,) = model.store.human_labels(PROJECT)
    assert (label.label, label.strength, label.choice) == ("B", None, "B")


def test_annotation_updated_replaces_the_stored_label(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 11, 1, "Tie"))
        client.post(
            "/webhook",
            json=annotation_event(
                "ANNOTATION_UPDATED", 11, 1, "B-is-clearly-better", completed_by={"id": 5}
            ),
        )
        labels = model.store.human_labels(PROJECT)
    assert [(x.annotation_id, x.label, x.strength, x.annotator) for x in labels] == [
        (11, "B", "clear", 5)
    ]


def test_a_skipped_task_is_not_a_label(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body())
        event = annotation_event("ANNOTATION_CREATED", 11, 1, "Tie", was_cancelled=True)
        response = client.post("/webhook", json=event)
        assert model.store.human_labels(PROJECT) == []
    assert response.status_code == 200
    assert "skipped" in response.json()["status"]


def test_an_annotation_naming_no_task_is_ignored_and_one_without_an_id_is_refused(
    tmp_path: Path,
) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body())
        no_task = annotation_event("ANNOTATION_CREATED", 11, 1, "Tie")
        del no_task["annotation"]["task"], no_task["task"]
        no_id = annotation_event("ANNOTATION_CREATED", 12, 1, "Tie")
        del no_id["annotation"]["id"]
        ignored, refused = (
            client.post("/webhook", json=no_task),
            client.post("/webhook", json=no_id),
        )
        assert model.store.human_labels(PROJECT) == []
    assert ignored.status_code == 200 and "names no task" in ignored.json()["status"]
    assert refused.status_code == 422 and "id" in str(refused.json()["detail"])


def test_an_annotation_without_a_preference_is_not_a_label(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body())
        response = client.post("/webhook", json=annotation_event("ANNOTATION_CREATED", 11, 1, None))
        assert model.store.human_labels(PROJECT) == []
    assert response.status_code == 200


def test_an_annotation_for_a_never_set_up_project_is_ignored(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        event = annotation_event("ANNOTATION_CREATED", 11, 1, "Tie", project=55)
        response = client.post("/webhook", json=event)
        assert model.store.human_labels(55) == []
    assert response.status_code == 200


def test_the_backends_own_annotations_are_not_learned_from(
    tmp_path: Path, label_studio: FakeLabelStudio
) -> None:
    settings = make_settings(
        tmp_path, label_studio_url=label_studio.url, label_studio_api_key=LS_KEY
    )
    backend = label_studio.user_id
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        own = annotation_event(
            "ANNOTATION_CREATED", 11, 1, "Tie", completed_by=backend, parent_prediction=500
        )
        own_as_object = annotation_event(
            "ANNOTATION_CREATED", 12, 2, "Tie", completed_by={"id": backend}, parent_prediction=501
        )
        # a human who accepted a prediction: parent_prediction is set, but it is a human label
        human = annotation_event(
            "ANNOTATION_CREATED", 13, 3, "A-is-clearly-better", completed_by=4, parent_prediction=7
        )
        # a human who corrected the backend's pre-fill in place: still credited to the
        # backend's user, but saved last by the human
        corrected = annotation_event(
            "ANNOTATION_UPDATED",
            14,
            4,
            "B-is-clearly-better",
            completed_by=backend,
            updated_by={"id": 5},
            parent_prediction=502,
        )
        unchanged = annotation_event(
            "ANNOTATION_UPDATED",
            15,
            5,
            "Tie",
            completed_by=backend,
            updated_by=backend,
            parent_prediction=503,
        )
        answers = [
            client.post("/webhook", json=e).json()["status"]
            for e in (own, own_as_object, unchanged)
        ]
        client.post("/webhook", json=human)
        client.post("/webhook", json=corrected)
        labels = model.store.human_labels(PROJECT)
    assert all("own annotation" in answer for answer in answers)
    assert [x.annotation_id for x in labels] == [13, 14]
    assert [x.annotator for x in labels] == [4, 5]
    assert any(path.endswith("/whoami") or "whoami" in path for path in label_studio.paths())


def test_annotations_deleted_forgets_the_labels(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body())
        for annotation_id in (11, 12, 13):
            event = annotation_event("ANNOTATION_CREATED", annotation_id, annotation_id, "Tie")
            client.post("/webhook", json=event)
        response = client.post(
            "/webhook",
            json={
                "action": "ANNOTATIONS_DELETED",
                "project": {"id": PROJECT},
                "annotations": [{"id": 11}, {"id": 13}, {"id": 999}],
            },
        )
        remaining = [x.annotation_id for x in model.store.human_labels(PROJECT)]
    assert response.status_code == 200
    assert "forgot 2" in response.json()["status"]
    assert remaining == [12]


def test_an_annotation_with_a_choice_the_config_lacks_is_acknowledged(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body(CONFIG_3WAY))
        event = annotation_event("ANNOTATION_CREATED", 11, 1, "A-is-clearly-better")
        response = client.post("/webhook", json=event)
        assert model.store.human_labels(PROJECT) == []
    assert response.status_code == 200


PAIRWISE_CONFIG = (
    '<View><Text name="prompt" value="$prompt"/><Pairwise name="comparison" '
    'toName="answer1,answer2"/><Text name="answer1" value="$answer1"/>'
    '<Text name="answer2" value="$answer2"/></View>'
)


@pytest.mark.parametrize(("side", "label"), [("left", "A"), ("right", "B")])
def test_a_pairwise_annotation_is_a_human_label(tmp_path: Path, side: str, label: str) -> None:
    event = annotation_event("ANNOTATION_CREATED", 11, 1, None)
    event["annotation"]["result"] = [
        {
            "from_name": "comparison",
            "to_name": "comparison",
            "type": "pairwise",
            "value": {"selected": side},
        }
    ]
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body(PAIRWISE_CONFIG))
        response = client.post("/webhook", json=event)
        (stored,) = model.store.human_labels(PROJECT)
    assert response.json()["status"] == f"stored label {label}"
    assert (stored.label, stored.choice) == (label, side)


def test_an_import_into_a_project_whose_config_cannot_be_routed_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ranker = (
        '<View><Text name="prompt" value="$prompt"/><List name="answers" value="$items"/>'
        '<Ranker name="rank" toName="answers"/></View>'
    )
    with serve(make_settings(tmp_path)) as (client, model), caplog.at_level("WARNING"):
        response = client.post("/webhook", json=tasks_created([task(1)], config=ranker))
        assert model.store.task(PROJECT, 1) is None
    assert response.status_code == 200
    assert "label config cannot be routed: <Ranker name='rank'>" in response.json()["status"]
    assert f"project {PROJECT}: imported tasks not routed: <Ranker" in caplog.text
