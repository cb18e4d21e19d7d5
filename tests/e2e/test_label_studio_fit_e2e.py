"""The backend fits Label Studio as it is used (issue 9, items 2-4), end to end.

A real Label Studio 1.23, the real backend (``hyper-ls serve``), a scripted fake judge:

- a task edited in Label Studio between its import and its write-back keeps the edit;
- opening a human-routed task (or the labeling stream, or "Retrieve predictions") makes
  Label Studio call ``/predict``, and nothing is stored: no empty prediction, no model tab;
  an AI-routed task's prediction is stored once (by the write-back, or through ``/predict``
  by a backend without a Label Studio key), however often Label Studio asks;
- the judge's annotations are credited to its own user, not to the token's owner, and the
  backend still never learns from them.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from label_studio_sdk import LabelStudio
from lm.fake_llm_server import FakeLLMServer, Recorded, Reply, anthropic_error

from e2e.backend import BackendProcess, ScriptedJudge, comparison_data, wait_for
from e2e.conftest import SLOW_REPLY_S, Connect, StartBackend
from e2e.label_studio import LabelStudioServer
from e2e.reading import (
    annotations,
    check_ai_task,
    check_human_task,
    decisions_in_store,
    import_tasks,
    ls_tasks,
    predictions,
    wait_idle,
    wait_until_routed,
)
from hyper_ls_backend.ls.client import (
    JUDGE_EMAIL,
    JUDGE_NAME,
    REASON_FIELD,
    ROUTE_FIELD,
    SCORE_FIELD,
)
from hyper_ls_backend.ls.setup import WEBHOOK_ACTIONS

pytestmark = pytest.mark.label_studio

MIXED_PLANS = ["a-clear", "a-slight", "tie", "b-slight", "b-clear", "biased"]
HOLD_LIMIT_S = 120.0
"""A held judge call gives up (HTTP 500) after this long, so a failed test cannot hang."""


class HeldJudge:
    """The scripted judge behind a gate: every call waits until ``release()``."""

    def __init__(self, judge: ScriptedJudge) -> None:
        self.judge = judge
        self.waiting = 0
        self._released = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: Recorded) -> Reply:
        with self._lock:
            self.waiting += 1
        if not self._released.wait(HOLD_LIMIT_S):
            return anthropic_error(500, "held past the test's limit")
        return self.judge(request)

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def held_judge() -> Iterator[tuple[str, HeldJudge]]:
    """(base URL, judge) of a fake Anthropic API that answers only once released."""
    server = FakeLLMServer()
    judge = HeldJudge(ScriptedJudge(SLOW_REPLY_S))
    server.responder = judge
    server.start()
    yield server.base_url, judge
    judge.release()
    server.stop()


def api(label_studio: LabelStudioServer, path: str) -> Any:
    """GET a Label Studio API path as the labeling UI does (the admin's token)."""
    response = httpx.get(
        f"{label_studio.url}{path}",
        headers={"Authorization": f"Token {label_studio.api_key}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def predict_calls(backend: BackendProcess) -> int:
    """``/predict`` requests the backend has answered (from its access log)."""
    log = backend.log.read_text(errors="replace")
    return sum(1 for line in log.splitlines() if '"POST /predict HTTP' in line)


# -- 2. edits between import and write-back ---------------------------------------------------


def test_edits_made_in_label_studio_right_after_import_survive_the_write_back(
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
    held_judge: tuple[str, HeldJudge],
) -> None:
    n, n_edited = 24, 20
    judge_url, judge = held_judge
    # the held calls must not time out: the judge answers once the edits are made
    backend = start_backend(HYPER_JUDGE_BASE_URL=judge_url, HYPER_JUDGE_TIMEOUT="150")
    project_id = connect(backend, "e2e: edits kept")
    data = [
        {**comparison_data(f"e{i}", MIXED_PLANS[i % len(MIXED_PLANS)]), "source": "batch-1"}
        for i in range(n)
    ]
    ids = import_tasks(ls_client, project_id, data)
    wait_for(lambda: judge.waiting > 0, 60, interval=0.1, what="the backend to ask the judge")

    edited: dict[int, dict[str, Any]] = {}
    for task_id, original in zip(ids[:n_edited], data, strict=False):
        change = {
            **original,
            "response_a": original["response_a"] + " (typo fixed in Label Studio)",
            "source": "batch-1, reviewed",
            "reviewer_note": f"checked {task_id}",
        }
        ls_client.tasks.update(id=str(task_id), data=change)
        edited[task_id] = change
    assert decisions_in_store(backend, project_id) == [], "decided before the edits: untested"
    judge.release()

    tasks, _ = wait_until_routed(ls_client, project_id, n, timeout=120)
    wait_idle(backend)

    ours = {ROUTE_FIELD, SCORE_FIELD, REASON_FIELD}
    expected = dict(zip(ids, data, strict=True)) | edited
    kept = 0
    for task in ls_tasks(ls_client, project_id):
        assert set(task.data) == set(expected[task.id]) | ours, task.id
        assert {k: task.data[k] for k in expected[task.id]} == expected[task.id], task.id
        kept += task.id in edited
        if task.data[ROUTE_FIELD] == "ai":
            check_ai_task(task)
        else:
            check_human_task(task)
    assert kept == n_edited
    assert Counter(t.data[ROUTE_FIELD] for t in tasks) == {"human": 6, "ai": 18}


# -- 3. /predict never stores an empty prediction --------------------------------------------


def test_opening_a_human_routed_task_stores_no_prediction(
    label_studio: LabelStudioServer,
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
) -> None:
    backend = start_backend(HYPER_BUDGET="0.5")
    project_id = connect(backend, "e2e: no empty predictions")
    data = [comparison_data(f"o{i}", MIXED_PLANS[i % len(MIXED_PLANS)]) for i in range(20)]
    import_tasks(ls_client, project_id, data)
    tasks, _ = wait_until_routed(ls_client, project_id, len(data), timeout=90)
    wait_idle(backend)
    human = [t.id for t in tasks if t.data[ROUTE_FIELD] == "human"]
    ai = {t.id: predictions(t) for t in tasks if t.data[ROUTE_FIELD] == "ai"}
    assert len(human) == 10

    # Opening a task in the labeling UI: Label Studio asks /predict, as the task has none.
    before = predict_calls(backend)
    for task_id in human[:3]:
        assert api(label_studio, f"/api/tasks/{task_id}")["predictions"] == []
    assert predict_calls(backend) >= before + 3, "Label Studio did not call /predict"
    # The labeling stream ("Label All Tasks") serves a human-routed task, with no prediction.
    served = api(label_studio, f"/api/projects/{project_id}/next")
    assert served["id"] in human and served["predictions"] == []
    # The Data Manager's "Retrieve predictions", twice: still nothing stored, nothing lost.
    for _ in range(2):
        ls_client.actions.create(
            id="retrieve_tasks_predictions",
            project=project_id,
            selected_items={"all": False, "included": [t.id for t in tasks]},
        )
    after = {t.id: t for t in ls_tasks(ls_client, project_id)}
    for task_id in human:
        check_human_task(after[task_id])
    for task_id, stored in ai.items():
        assert predictions(after[task_id]) == stored
    log = label_studio.log.read_text(errors="replace")
    assert "ML backend returns an incorrect" not in log
    assert "Number of tasks and responses are not equal" not in log


def test_without_a_label_studio_key_predict_serves_each_pre_fill_once(
    label_studio: LabelStudioServer,
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
) -> None:
    """With no key the backend cannot write back: ``/predict`` is how Label Studio gets the
    judge's answers, each stored once however often it asks."""
    backend = start_backend(HYPER_BUDGET="0.5", LABEL_STUDIO_API_KEY="")
    project_id = connect(backend, "e2e: predictions only through /predict")
    data = [comparison_data(f"k{i}", MIXED_PLANS[i % len(MIXED_PLANS)]) for i in range(12)]
    ids = import_tasks(ls_client, project_id, data)
    wait_for(lambda: len(decisions_in_store(backend, project_id)) == len(ids), 60, what="decisions")
    wait_idle(backend)
    routes = dict(decisions_in_store(backend, project_id))
    project = ls_client.projects.get(id=project_id)
    shuffled = random.Random(5).sample(ls_tasks(ls_client, project_id), len(ids))
    payload = {
        "tasks": [{"id": t.id, "data": t.data, "meta": {}, "predictions": []} for t in shuffled],
        "project": f"{project_id}.{int(project.created_at.timestamp())}",
        "label_config": project.label_config,
    }

    status, body = backend.request("POST", "/predict", payload)

    assert status == 200, body
    served = dict(zip((t.id for t in shuffled), body["results"], strict=True))
    assert {t for t, r in served.items() if r == []} == {t for t in ids if routes[t] == "human"}
    # "Retrieve predictions", twice, and opening every task: one prediction per AI task
    for _ in range(2):
        ls_client.actions.create(
            id="retrieve_tasks_predictions",
            project=project_id,
            selected_items={"all": False, "included": ids},
        )
    for task_id in ids:
        api(label_studio, f"/api/tasks/{task_id}")
    for task in ls_tasks(ls_client, project_id):
        if routes[task.id] == "human":
            assert predictions(task) == []
            continue
        (prediction,) = predictions(task)
        assert prediction["result"] == served[task.id]["result"] != []
        assert prediction["model_version"] == served[task.id]["model_version"]
        assert annotations(task) == []  # nothing written back: no pre-filled annotation


# -- 4. the judge's annotations under its own name -------------------------------------------


def test_the_judges_annotations_are_credited_to_its_own_user(
    ls_client: LabelStudio, start_backend: StartBackend, connect: Connect
) -> None:
    backend = start_backend(HYPER_BUDGET="0.25")
    project_id = connect(backend, "e2e: judge's own user")
    (judge,) = [u for u in ls_client.users.list() if u.email == JUDGE_EMAIL]  # made by connect
    assert (judge.first_name, judge.last_name) == JUDGE_NAME
    token_owner = ls_client.users.whoami().id
    data = [comparison_data(f"j{i}", MIXED_PLANS[i % len(MIXED_PLANS)]) for i in range(20)]
    import_tasks(ls_client, project_id, data)
    tasks, _ = wait_until_routed(ls_client, project_id, len(data), timeout=90)
    wait_idle(backend)

    ai = [t for t in tasks if t.data[ROUTE_FIELD] == "ai"]
    assert len(ai) == 15
    for task in ai:
        check_ai_task(task)
        (annotation,) = annotations(task)
        assert annotation["completed_by"] == judge.id != token_owner
        assert [a if isinstance(a, int) else a["id"] for a in task.annotators] == [judge.id]

    # The backend saw each of those annotations (ANNOTATION_CREATED) and learned from none;
    # a person's annotation it does learn from, credited to that person.
    human_task = next(t for t in tasks if t.data[ROUTE_FIELD] == "human")
    region = {"from_name": "preference", "to_name": "prompt", "type": "choices"}
    ls_client.annotations.create(
        id=human_task.id, result=[{**region, "value": {"choices": ["A-is-clearly-better"]}}]
    )
    labels = wait_for(
        lambda: backend.query(
            "SELECT task_id, annotator FROM human_labels WHERE project_id = ?", project_id
        ),
        30,
        interval=0.2,
        what="the human label",
    )
    assert labels == [(human_task.id, token_owner)]
    # connect again (a second project, a restarted setup): the same judge user is reused
    connect(backend, "e2e: judge's own user, again")
    assert [u.id for u in ls_client.users.list() if u.email == JUDGE_EMAIL] == [judge.id]


@pytest.mark.parametrize(
    "every_action", [False, True], ids=["as hyper-ls connect leaves it", "for every action"]
)
def test_the_judges_bulk_annotations_raise_no_webhook_or_one_the_backend_acknowledges(
    label_studio: LabelStudioServer,
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
    every_action: bool,
) -> None:
    """With a token of its own (``LABEL_STUDIO_JUDGE_API_KEY``) the judge's annotations are
    made in bulk. ``hyper-ls connect`` narrows the backend's webhook to the events it acts
    on, so Label Studio posts nothing back for them. A backend added in the project's
    Model settings keeps the webhook Label Studio made, for every action: it posts them
    back as one ``ANNOTATIONS_CREATED`` holding the annotations and their tasks in lists,
    acknowledged (it was refused, 422, when a list of tasks did not fit the schema). Either
    way they are learned from as nothing."""
    token = label_studio.create_user(f"judge-token-{every_action}@example.com".lower())
    backend = start_backend(HYPER_BUDGET="0.25", LABEL_STUDIO_JUDGE_API_KEY=token)
    project_id = connect(backend, "e2e: judge's token")
    (hook,) = ls_client.webhooks.list(project=str(project_id))
    assert not hook.send_for_all_actions and sorted(hook.actions) == sorted(WEBHOOK_ACTIONS)
    if every_action:
        ls_client.webhooks.update(id=hook.id, send_for_all_actions=True)
    data = [comparison_data(f"k{i}", MIXED_PLANS[i % len(MIXED_PLANS)]) for i in range(20)]
    import_tasks(ls_client, project_id, data)
    tasks, _ = wait_until_routed(ls_client, project_id, len(data), timeout=90)
    wait_idle(backend)

    ai = [t for t in tasks if t.data[ROUTE_FIELD] == "ai"]
    assert len(ai) == 15 and all(check_ai_task(task) for task in ai)
    _, metrics = backend.request("GET", "/metrics", auth=backend.auth)
    assert 'hyper_webhooks_total{action="TASKS_CREATED"} 1.0' in metrics
    bulk = 'hyper_webhooks_total{action="ANNOTATIONS_CREATED"}'
    if every_action:
        assert f"{bulk} 1.0" in metrics
    else:
        assert bulk not in metrics
    assert '"POST /webhook HTTP/1.1" 422' not in backend.log.read_text(errors="replace")
    assert backend.query("SELECT count(*) FROM human_labels WHERE project_id = ?", project_id) == [
        (0,)
    ]
