"""Acceptance tests of the Label Studio backend, end to end (issue 3).

A real Label Studio 1.23 (one per session), the real backend (``hyper-ls serve`` as a
subprocess), a fake Anthropic API scripted per task. Projects are set up the way
``hyper-ls connect`` does it, and tasks are imported through the SDK so that Label Studio
itself sends the TASKS_CREATED webhook the backend routes on.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import httpx
import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from e2e.backend import PLANS, ScriptedJudge, comparison_data, wait_for
from e2e.conftest import CONFIG_5POINT, Connect, StartBackend
from e2e.label_studio import LabelStudioServer
from e2e.reading import (
    annotations,
    check_ai_task,
    check_human_task,
    decisions_in_store,
    finished_jobs,
    import_tasks,
    judged_in_store,
    key_of,
    ls_tasks,
    plan_of,
    predictions,
    wait_idle,
    wait_until_routed,
)
from hyper_ls_backend.jobs.queue import CHUNK
from hyper_ls_backend.ls.client import REASON_FIELD, ROUTE_FIELD, SCORE_FIELD, TABS
from hyper_ls_backend.settings import Settings

pytestmark = pytest.mark.label_studio

CONCURRENCY = Settings.model_fields["hyper_judge_concurrency"].default
"""The backend's LM requests in flight at most (not set by the tests)."""

EXPECTED_CHOICE = {**PLANS, "biased": "Tie"}
"""The 5-point choice a task's judge plan ends as: a consistent answer as given (strength
from the judge's confidence), and a position-biased judge's contradicting answers as a tie."""
MIXED_PLANS = ["a-clear", "a-slight", "tie", "b-slight", "b-clear", "biased"]


# -- 1. an import of 200 tasks ----------------------------------------------------------------


def test_import_of_200_tasks_routes_every_task_within_the_budget(
    label_studio: LabelStudioServer,
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
    scripted_judge: tuple[str, ScriptedJudge],
) -> None:
    budget, n = 0.25, 200
    backend = start_backend(HYPER_BUDGET=str(budget))
    project_id = connect(backend, "e2e: 200 tasks")
    data = [comparison_data(f"t{i}", MIXED_PLANS[i % len(MIXED_PLANS)]) for i in range(n)]

    imported = import_tasks(ls_client, project_id, data)
    tasks, seconds = wait_until_routed(ls_client, project_id, n, timeout=240)
    print(
        f"\n[timing] backend start {backend.startup_s:.1f} s; {n} tasks routed in {seconds:.1f} s"
    )

    assert sorted(t.id for t in tasks) == imported
    routes = Counter(t.data[ROUTE_FIELD] for t in tasks)
    assert routes == {"human": math.floor(budget * n), "ai": n - math.floor(budget * n)}
    for task in tasks:
        assert isinstance(task.data[SCORE_FIELD], float)
        assert task.data[REASON_FIELD].strip()
        if task.data[ROUTE_FIELD] == "ai":
            choice = check_ai_task(task)
            assert choice == EXPECTED_CHOICE[plan_of(task)], task.data
            assert task.data[REASON_FIELD].startswith("AI: judge says ")
        else:
            check_human_task(task)
    # every task was judged in both orders, once each (the judge always answers)
    _, judge = scripted_judge
    assert all(judge.attempts(key_of(t)) == {False: 1, True: 1} for t in tasks)
    # the position-biased judge's tasks score highest and go to humans, except those met
    # while the budget had no room yet (floor(0.25 x n_seen) is 0 for the first three)
    human_plans = Counter(plan_of(t) for t in tasks if t.data[ROUTE_FIELD] == "human")
    assert human_plans["biased"] >= sum(1 for t in tasks if plan_of(t) == "biased") - 3

    # the two tabs exist and filter on data.hyper_route
    views = {v.data["title"]: v for v in ls_client.views.list(project=project_id)}
    assert set(TABS) <= set(views)
    for title, route in TABS.items():
        (rule,) = views[title].data["filters"]["items"]
        assert (rule["filter"], rule["operator"], rule["value"]) == (
            f"filter:tasks:data.{ROUTE_FIELD}",
            "equal",
            route,
        )
        in_tab = sorted(
            t.id for t in ls_client.tasks.list(project=project_id, view=views[title].id)
        )
        assert in_tab == sorted(t.id for t in tasks if t.data[ROUTE_FIELD] == route), title

    # the labeling stream serves human-routed tasks only (AI ones are labelled already)
    assert ls_client.projects.get(id=project_id).maximum_annotations == 1
    by_id = {t.id: t for t in tasks}
    served = label_studio_next_task(label_studio, project_id)
    assert by_id[served].data[ROUTE_FIELD] == "human"


def label_studio_next_task(label_studio: LabelStudioServer, project_id: int) -> int:
    """The task the labeling stream ("Label All Tasks") serves next."""
    response = httpx.get(
        f"{label_studio.url}/api/projects/{project_id}/next",
        headers={"Authorization": f"Token {label_studio.api_key}"},
        timeout=30,
    )
    response.raise_for_status()
    return int(response.json()["id"])


# -- 2. judge failures --------------------------------------------------------------------------


def test_judge_errors_are_retried_and_a_judge_that_never_answers_sends_the_task_to_humans(
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
    scripted_judge: tuple[str, ScriptedJudge],
) -> None:
    # One job routes five tasks in turn: each slow (retried) task leads its own job.
    plans = ["flaky", "fail-500", "fail-429", "fail-timeout"]
    data = []
    for plan in plans:
        data.append(comparison_data(plan, plan))
        data.extend(comparison_data(f"{plan}-ok{j}", "a-clear") for j in range(4))
    # budget 0: a human-routed task is there because its judge failed, nothing else; no
    # patience with rate limits, so that a 429 costs an attempt like any failure (the
    # patience is tested in tests/lm/test_retry.py)
    backend = start_backend(
        HYPER_BUDGET="0",
        HYPER_JUDGE_MAX_ATTEMPTS="3",
        HYPER_JUDGE_TIMEOUT="1",
        HYPER_JUDGE_RATE_LIMIT_WAIT="0",
    )
    project_id = connect(backend, "e2e: judge failures")

    import_tasks(ls_client, project_id, data)
    tasks, _ = wait_until_routed(ls_client, project_id, len(data), timeout=90)

    _, judge = scripted_judge
    by_key = {key_of(t): t for t in tasks}
    # 429 and 500 (A-B order), a timeout and 429 (B-A order), then answers: retried to success
    assert judge.attempts("flaky") == {False: 3, True: 3}
    flaky = by_key["flaky"]
    assert flaky.data[ROUTE_FIELD] == "ai"
    assert check_ai_task(flaky) == "A-is-clearly-better"
    # never an answer: every attempt made, then humans, with the errors in the reason
    for plan, shown in [
        ("fail-500", "HTTP 500"),
        ("fail-429", "HTTP 429"),
        ("fail-timeout", "timed out"),
    ]:
        assert judge.attempts(plan) == {False: 3, True: 3}, plan
        task = by_key[plan]
        assert task.data[ROUTE_FIELD] == "human", plan
        check_human_task(task)
        reason = task.data[REASON_FIELD]
        assert "judge failed" in reason and shown in reason, reason
    # the rest of each job went on as usual
    others = [t for t in tasks if "-ok" in key_of(t)]
    assert len(others) == 16
    assert all(t.data[ROUTE_FIELD] == "ai" for t in others)


# -- 3. malformed tasks -------------------------------------------------------------------------


def test_a_malformed_task_goes_to_humans_with_its_reason_and_the_batch_goes_on(
    ls_client: LabelStudio, start_backend: StartBackend, connect: Connect
) -> None:
    backend = start_backend(HYPER_BUDGET="0")
    project_id = connect(backend, "e2e: malformed")
    good = [comparison_data(f"good{i}") for i in range(6)]
    malformed = {
        "number-prompt": (
            comparison_data("number-prompt", prompt=42),
            "data.prompt (the prompt) is int, not text",
        ),
        "empty-prompt": (comparison_data("empty-prompt", prompt="  "), "is empty"),
        "no-responses": (
            comparison_data("no-responses", response_a="", response_b=""),
            "are both empty",
        ),
        "bad-context": (comparison_data("bad-context", context=7), "data.context must be"),
    }
    # Label Studio itself refuses a task without response_b or with an object as prompt:
    for refused in (
        {k: v for k, v in comparison_data("no-b").items() if k != "response_b"},
        comparison_data("object-prompt", prompt={"text": "hi"}),
    ):
        with pytest.raises(ApiError):
            ls_client.projects.import_tasks(id=project_id, request=[{"data": refused}])
    data = [*good[:3], *(d for d, _ in malformed.values()), *good[3:]]

    ids = import_tasks(ls_client, project_id, data)
    tasks, _ = wait_until_routed(ls_client, project_id, len(data), timeout=60)

    by_id = {t.id: t for t in tasks}
    for task_id, (name, (_, reason)) in zip(ids[3:7], malformed.items(), strict=True):
        task = by_id[task_id]
        assert task.data[ROUTE_FIELD] == "human", name
        check_human_task(task)
        assert "task could not be read" in task.data[REASON_FIELD], name
        assert reason in task.data[REASON_FIELD], (name, task.data[REASON_FIELD])
    for task_id in [*ids[:3], *ids[7:]]:
        assert by_id[task_id].data[ROUTE_FIELD] == "ai"
        assert check_ai_task(by_id[task_id]) == "A-is-clearly-better"

    # A task without response_b can still reach the backend (a cloud storage sync, a task
    # edited after import). Make one in Label Studio behind the webhook's back, then send
    # TASKS_CREATED for it as Label Studio would: humans get it, with the reason. (An
    # update of the webhook that does not name its actions clears them.)
    (webhook,) = ls_client.webhooks.list(project=str(project_id))
    ls_client.webhooks.update(id=webhook.id, is_active=False, actions=webhook.actions)
    (edited_id,) = import_tasks(ls_client, project_id, [comparison_data("edited")])
    edited = comparison_data("edited")
    del edited["response_b"]
    ls_client.tasks.update(id=str(edited_id), data=edited)
    ls_client.webhooks.update(id=webhook.id, is_active=True, actions=webhook.actions)
    payload = {
        "action": "TASKS_CREATED",
        "project": {"id": project_id},
        "tasks": [{"id": edited_id, "data": edited, "meta": {}, "project": project_id}],
    }
    assert backend.request("POST", "/webhook", payload)[0] == 200
    tasks, _ = wait_until_routed(ls_client, project_id, len(data) + 1, timeout=30)
    (task,) = [t for t in tasks if t.id == edited_id]
    assert task.data[ROUTE_FIELD] == "human"
    check_human_task(task)
    assert "data.response_b (response B) is missing" in task.data[REASON_FIELD]


# -- 4. crash and restart -------------------------------------------------------------------


def test_a_backend_killed_mid_import_loses_nothing_and_routes_nothing_twice(
    label_studio: LabelStudioServer,
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
    scripted_judge: tuple[str, ScriptedJudge],
) -> None:
    budget, n = 0.25, 60
    _, judge = scripted_judge
    judge.delay_s = 0.25  # slow enough that the import is still being routed at the kill
    backend = start_backend(HYPER_BUDGET=str(budget))
    project_id = connect(backend, "e2e: crash")
    data = [comparison_data(f"c{i}", MIXED_PLANS[i % len(MIXED_PLANS)]) for i in range(n)]
    ids = import_tasks(ls_client, project_id, data)
    # the same TASKS_CREATED again while the first is being routed (a retry, a proxy)
    payload = {
        "action": "TASKS_CREATED",
        "project": {"id": project_id, "label_config": CONFIG_5POINT.read_text()},
        "tasks": [
            {"id": task_id, "data": d, "meta": {}, "project": project_id}
            for task_id, d in zip(ids, data, strict=True)
        ],
    }
    status, body = backend.request("POST", "/webhook", payload)
    assert status == 200 and body["status"] == f"received {n} tasks", body

    # the import is decided once all of it is judged: kill it part-way through the judging
    wait_for(
        lambda: judged_in_store(backend, project_id) >= 8,
        60,
        interval=0.1,
        what="the first judged tasks",
    )
    backend.kill()
    judged_at_kill = judged_in_store(backend, project_id)
    decided_at_kill = len(decisions_in_store(backend, project_id))
    assert judged_at_kill < n, "the import was judged before the kill: nothing was tested"
    judge.delay_s = 0.0
    backend.start()
    wait_until_routed(ls_client, project_id, n, timeout=120)
    wait_idle(backend)
    print(
        f"\n[timing] backend restart {backend.startup_s:.1f} s; at the kill {judged_at_kill}/{n}"
        f" judged, {decided_at_kill} decided"
    )

    def check_state() -> list[Any]:
        tasks = ls_tasks(ls_client, project_id)
        assert sorted(t.id for t in tasks) == ids
        stored = decisions_in_store(backend, project_id)
        assert [task_id for task_id, _ in stored] == ids  # exactly one decision per task
        routes = dict(stored)
        for task in tasks:
            assert task.data[ROUTE_FIELD] == routes[task.id]
            assert len(predictions(task)) <= 1 and len(annotations(task)) <= 1
            if routes[task.id] == "ai":
                check_ai_task(task)
            else:
                check_human_task(task)
        assert Counter(routes.values())["human"] == math.floor(budget * n)
        return tasks

    before = check_state()

    # The judge was paid once per task and order, but for the tasks in flight at the kill,
    # which are judged again after the restart: at most one per LM request slot (their
    # orders take the slots first come first served, so few are left half-asked).
    judged_twice = [t for t in ids if max(judge.attempts(f"c{ids.index(t)}").values()) > 1]
    assert len(judged_twice) <= CONCURRENCY, judged_twice

    # Once routed, the duplicated webhook changes nothing either.
    jobs_before = finished_jobs(backend)
    status, body = backend.request("POST", "/webhook", payload)
    assert status == 200 and body["status"] == f"received {n} tasks", body
    wait_for(
        lambda: finished_jobs(backend) >= jobs_before + math.ceil(n / CHUNK),
        30,
        interval=0.2,
        what="the duplicated webhook's jobs to run",
    )
    after = check_state()
    assert [(t.id, t.data, predictions(t), annotations(t)) for t in after] == [
        (t.id, t.data, predictions(t), annotations(t)) for t in before
    ]


# -- 5. basic auth --------------------------------------------------------------------------


def test_basic_auth_is_enforced_and_label_studio_connected_with_it_works(
    ls_client: LabelStudio, start_backend: StartBackend, connect: Connect
) -> None:
    user, password = "hyper", "s3cret-pass"
    backend = start_backend(BASIC_AUTH_USER=user, BASIC_AUTH_PASS=password, HYPER_BUDGET="0.5")

    for method, path, body in [
        ("GET", "/health", None),
        ("POST", "/setup", {"project": "1.1", "schema": "<View/>"}),
        ("POST", "/predict", {"tasks": [], "project": "1.1"}),
        ("POST", "/webhook", {"action": "TASKS_CREATED"}),
        ("GET", "/metrics", None),
    ]:
        assert backend.request(method, path, body)[0] == 401, path
        assert backend.request(method, path, body, auth=(user, "wrong"))[0] == 401, path
    assert backend.request("GET", "/health", auth=(user, password))[0] == 200

    project_id = connect(backend, "e2e: basic auth", auth=(user, password))
    data = [comparison_data(f"auth{i}", MIXED_PLANS[i % len(MIXED_PLANS)]) for i in range(20)]
    import_tasks(ls_client, project_id, data)
    tasks, _ = wait_until_routed(ls_client, project_id, len(data), timeout=60)

    assert Counter(t.data[ROUTE_FIELD] for t in tasks) == {"human": 10, "ai": 10}
    for task in tasks:
        if task.data[ROUTE_FIELD] == "ai":
            check_ai_task(task)


# -- 6. /predict ----------------------------------------------------------------------------


def test_predict_returns_one_result_per_task_in_order(
    ls_client: LabelStudio, start_backend: StartBackend, connect: Connect
) -> None:
    backend = start_backend(HYPER_BUDGET="0.5")
    project_id = connect(backend, "e2e: predict")
    data = [comparison_data(f"p{i}", MIXED_PLANS[i % len(MIXED_PLANS)]) for i in range(12)]
    import_tasks(ls_client, project_id, data)
    tasks, _ = wait_until_routed(ls_client, project_id, len(data), timeout=60)
    wait_idle(backend)
    shuffled = random.Random(3).sample(tasks, len(tasks))
    project = ls_client.projects.get(id=project_id)

    # what Label Studio's api_connector sends: full tasks, "<id>.<created_ts>", the config
    payload = {
        "tasks": [
            {
                "id": t.id,
                "data": t.data,
                "meta": t.meta or {},
                "annotations": annotations(t),
                "predictions": predictions(t),
            }
            for t in shuffled
        ],
        "project": f"{project_id}.{int(project.created_at.timestamp())}",
        "label_config": project.label_config,
        "params": {"login": None, "password": None, "context": None},
    }
    status, body = backend.request("POST", "/predict", payload)

    assert status == 200, body
    results = body["results"]
    assert len(results) == len(shuffled)
    # Nothing to store for any task: a human-routed one has no pre-fill (an empty prediction
    # would show as a model tab), an AI-routed one has the write-back's prediction already.
    assert results == [[] for _ in shuffled]
    assert all(len(predictions(t)) == (t.data[ROUTE_FIELD] == "ai") for t in shuffled)

    # Label Studio's own "Retrieve predictions" (Data Manager action) calls /predict with
    # the tasks that have no prediction of the current model version: the human-routed ones,
    # which keep having none.
    ls_client.actions.create(
        id="retrieve_tasks_predictions",
        project=project_id,
        selected_items={"all": False, "included": [t.id for t in shuffled]},
    )
    after = {t.id: t for t in ls_tasks(ls_client, project_id)}
    for task in tasks:
        if task.data[ROUTE_FIELD] == "ai":
            assert predictions(after[task.id]) == predictions(task)
        else:
            assert predictions(after[task.id]) == []
