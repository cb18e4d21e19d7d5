"""The huey queue with its embedded consumer: background routing, and restart recovery.

Every test runs on the default SQLite queue and on a real Redis server (``REDIS_URL``,
marker ``redis``). The last one runs the multi-worker deployment: two backends sharing a
real PostgreSQL database and a Redis queue."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lm.fake_llm_server import FakeLLMServer
from server.harness import (
    CONFIG_5POINT,
    LS_KEY,
    PLANS,
    PROJECT,
    FakeLabelStudio,
    ScriptedJudge,
    judge_settings,
    make_settings,
    serve,
    setup_body,
    task,
    tasks_created,
    wait_until,
)
from services import PostgresServer, RedisServer

from hyper_ls_backend.core.policy import Route
from hyper_ls_backend.jobs import queue as queue_module
from hyper_ls_backend.jobs.queue import CHUNK
from hyper_ls_backend.lm.batch import INITIAL_WINDOW
from hyper_ls_backend.server.model import HyperModel
from hyper_ls_backend.server.schemas import WebhookEvent
from hyper_ls_backend.settings import Settings


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def queue(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings selecting the test's queue: SQLite in MODEL_DIR, or an emptied Redis."""
    if request.param == "sqlite":
        return {}
    return {"redis_url": request.getfixturevalue("redis_server").fresh_url()}


@pytest.fixture
def models() -> Iterator[list[HyperModel]]:
    """Models a test starts; each is stopped at teardown (its consumer threads joined)."""
    started: list[HyperModel] = []
    yield started
    for model in started:
        model.stop()


def start(settings: Settings, started: list[HyperModel]) -> HyperModel:
    model = HyperModel.build(settings, immediate=False)
    model.start()
    started.append(model)
    return model


def all_routed(model: HyperModel, n: int) -> bool:
    return sum(model.store.decision_counts().values()) == n and model.queue.pending() == 0


def import_without_running(settings: Settings, tasks: list[dict[str, Any]]) -> HyperModel:
    """A backend that stored and enqueued an import, then died before any job ran."""
    crashed = HyperModel.build(settings, immediate=False)  # never started: no consumer
    crashed.setup(PROJECT, CONFIG_5POINT, None)
    crashed.webhook(WebhookEvent.model_validate(tasks_created(tasks)))
    assert crashed.store.decision_counts() == {}
    assert crashed.queue.pending() > 0
    crashed.store.engine.dispose()
    return crashed


def test_the_embedded_consumer_routes_a_webhooks_tasks_in_the_background(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge, queue: dict[str, Any]
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.25, **queue)
    with serve(settings, immediate=False) as (client, model):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created([task(i, "biased") for i in range(1, 21)]))
        wait_until(lambda: all_routed(model, 20), what="20 tasks routed")
        counts = model.store.decision_counts()
        health = client.get("/health").json()
    assert counts == {(PROJECT, "human"): 5, (PROJECT, "ai"): 15}
    assert health["pending_jobs"] == 0 and health["queue"] == ("redis" if queue else "sqlite")


def test_pending_jobs_show_on_health_until_a_consumer_runs_them(
    tmp_path: Path, queue: dict[str, Any]
) -> None:
    settings = make_settings(tmp_path, **queue)
    crashed = import_without_running(settings, [task(i) for i in range(1, 12)])
    assert crashed.queue.pending() == 1  # the import's dispatch job


def test_restart_routes_every_enqueued_but_unrun_task_exactly_once(
    tmp_path: Path, llm: FakeLLMServer, models: list[HyperModel], queue: dict[str, Any]
) -> None:
    judge = ScriptedJudge(delay=0.01)  # slow enough for jobs to overlap
    llm.responder = judge
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.25, **queue)
    n = 23
    import_without_running(settings, [task(i, "biased") for i in range(1, n + 1)])

    restarted = start(settings, models)
    wait_until(lambda: all_routed(restarted, n), what=f"{n} tasks routed after restart")
    decisions = [restarted.store.decision(PROJECT, i) for i in range(1, n + 1)]
    assert sorted(d.sequence for d in decisions) == list(range(1, n + 1))
    assert sum(d.route == "human" for d in decisions) == 5  # floor(0.25 x 23)
    assert not restarted.store.undecided_tasks()


def test_restart_judges_every_enqueued_but_unrun_task_exactly_once(
    tmp_path: Path, llm: FakeLLMServer, models: list[HyperModel], queue: dict[str, Any]
) -> None:
    judge = ScriptedJudge(delay=0.01)
    llm.responder = judge
    # as many worker threads as jobs: an old job and its resumed copy run side by side
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.25, threads=8, **queue)
    n = 20
    import_without_running(settings, [task(i, "a") for i in range(1, n + 1)])

    restarted = start(settings, models)
    wait_until(lambda: all_routed(restarted, n), what=f"{n} tasks routed after restart")
    wait_until(lambda: restarted.queue.pending() == 0)
    duplicated = sorted(key for key, count in judge.calls.items() if count != 2)
    assert duplicated == [], f"judged more than once: {duplicated}"
    assert len(judge.calls) == n


@pytest.mark.parametrize("judged", ["part", "all"])
def test_restart_mid_import_judges_nothing_twice_and_decides_the_import_once(
    tmp_path: Path,
    llm: FakeLLMServer,
    models: list[HyperModel],
    queue: dict[str, Any],
    judged: str,
) -> None:
    """A backend died with an import of 24 partly judged (waiting for the rest), or all
    judged but not yet decided: the restart judges only what is left and ranks the import."""
    judge = ScriptedJudge()
    llm.responder = judge
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.25, **queue)
    n = 24
    plans = list(PLANS)
    crashed = import_without_running(settings, [task(i, plans[i % 5]) for i in range(1, n + 1)])
    for i in range(1, n - 4):
        assert crashed.pipeline.route_task(PROJECT, i) is None  # judged, waiting
    if judged == "all":

        def die(*_: Any) -> None:
            raise RuntimeError("killed while deciding")

        crashed.store.decide = die  # type: ignore[method-assign]
        for i in range(n - 4, n + 1):
            with contextlib.suppress(RuntimeError):
                crashed.pipeline.route_task(PROJECT, i)
    assert crashed.store.decision_counts() == {}
    crashed.store.engine.dispose()

    restarted = start(settings, models)
    wait_until(lambda: all_routed(restarted, n), what=f"{n} tasks routed after restart")
    assert dict(judge.calls) == {f"task {i}": 2 for i in range(1, n + 1)}
    decisions = [restarted.store.decision(PROJECT, i) for i in range(1, n + 1)]
    assert sorted(d.sequence for d in decisions) == list(range(1, n + 1))
    assert sum(d.route is Route.HUMAN for d in decisions) == 6  # floor(0.25 x 24)


def test_restart_routes_tasks_stored_but_never_enqueued(
    tmp_path: Path,
    llm: FakeLLMServer,
    judge: ScriptedJudge,
    models: list[HyperModel],
    queue: dict[str, Any],
) -> None:
    """A crash between storing a webhook's tasks and enqueuing them loses nothing."""
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.5, **queue)
    crashed = HyperModel.build(settings, immediate=False)
    crashed.setup(PROJECT, CONFIG_5POINT, None)
    crashed.store.record_tasks(PROJECT, [task(i, "biased") for i in range(1, 11)])
    assert crashed.queue.pending() == 0

    restarted = start(settings, models)
    wait_until(lambda: all_routed(restarted, 10), what="10 tasks routed after restart")
    assert restarted.store.decision_counts() == {(PROJECT, "human"): 5, (PROJECT, "ai"): 5}
    assert dict(judge.calls) == {f"task {i}": 2 for i in range(1, 11)}


def test_restart_does_not_route_decided_tasks_again(
    tmp_path: Path,
    llm: FakeLLMServer,
    judge: ScriptedJudge,
    models: list[HyperModel],
    queue: dict[str, Any],
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, **queue)
    first = start(settings, models)
    first.setup(PROJECT, CONFIG_5POINT, None)
    first.webhook(WebhookEvent.model_validate(tasks_created([task(i) for i in range(1, 8)])))
    wait_until(lambda: all_routed(first, 7))
    first.stop()
    before = {i: first.store.decision(PROJECT, i).sequence for i in range(1, 8)}
    calls = sum(judge.calls.values())

    second = start(settings, models)
    assert second.queue.pending() == 0
    assert {i: second.store.decision(PROJECT, i).sequence for i in range(1, 8)} == before
    assert sum(judge.calls.values()) == calls


def test_restart_writes_back_decisions_that_were_never_written(
    tmp_path: Path, label_studio: FakeLabelStudio, models: list[HyperModel], queue: dict[str, Any]
) -> None:
    offline = make_settings(tmp_path, **queue)  # first run: no Label Studio key, nothing written
    first = HyperModel.build(offline, immediate=True)
    first.setup(PROJECT, CONFIG_5POINT, None)
    first.webhook(WebhookEvent.model_validate(tasks_created([task(1), task(2)])))
    assert len(first.store.unwritten_decisions()) == 2

    online = make_settings(
        tmp_path, label_studio_url=label_studio.url, label_studio_api_key=LS_KEY, **queue
    )
    second = start(online, models)
    wait_until(lambda: not second.store.unwritten_decisions(), what="decisions written back")
    assert {t: data["hyper_route"] for t, data in label_studio.tasks.items()} == {
        1: "human",
        2: "human",
    }


def test_a_write_back_retried_after_a_failure_halfway_makes_nothing_twice(
    tmp_path: Path,
    llm: FakeLLMServer,
    label_studio: FakeLabelStudio,
    models: list[HyperModel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The import's write job made the predictions, then Label Studio failed on the fields
    (while another job may write some of the same tasks): whoever writes next finds the
    predictions made and makes none again."""
    monkeypatch.setattr(queue_module, "RETRY_DELAY", 0)
    llm.responder = ScriptedJudge()
    label_studio.actions_failing = 3  # the SDK's own retries of the first call, all failing
    settings = judge_settings(
        tmp_path,
        llm.base_url,
        hyper_budget=0.0,
        label_studio_url=label_studio.url,
        label_studio_api_key=LS_KEY,
    )
    model = start(settings, models)
    model.setup(PROJECT, CONFIG_5POINT, None)
    n = 2 * CHUNK
    model.webhook(WebhookEvent.model_validate(tasks_created([task(i) for i in range(1, n + 1)])))
    # All decided first, then none unwritten: read the other way round, an empty store
    # (nothing decided yet, so nothing unwritten) would pass before the write-back ran.
    wait_until(lambda: all_routed(model, n) and not model.store.unwritten_decisions(), 60)
    assert label_studio.actions_failing == 0
    assert {t: len(p) for t, p in label_studio.predictions.items()} == {
        t: 1 for t in range(1, n + 1)
    }
    assert {t: len(a) for t, a in label_studio.annotations.items()} == {
        t: 1 for t in range(1, n + 1)
    }
    assert all(label_studio.tasks[t]["hyper_route"] == "ai" for t in range(1, n + 1))


def test_a_new_queue_runs_the_jobs_another_enqueued_without_any_resume(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge, queue: dict[str, Any]
) -> None:
    """The queue itself keeps pending jobs: a consumer on a new queue object (its own
    connection) runs them, with nothing re-enqueued from the database."""
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.25, **queue)
    import_without_running(settings, [task(i, "biased") for i in range(1, 13)])

    restarted = HyperModel.build(settings, immediate=False)
    assert restarted.queue.pending() == 1
    restarted.queue.start()  # the consumer only; HyperModel.start would also resume
    try:
        wait_until(lambda: all_routed(restarted, 12), what="12 tasks routed by the new queue")
    finally:
        restarted.queue.stop()
    assert restarted.store.decision_counts() == {(PROJECT, "human"): 3, (PROJECT, "ai"): 9}
    assert dict(judge.calls) == {f"task {i}": 2 for i in range(1, 13)}


def test_lm_requests_in_flight_are_bounded_by_the_shared_limit_not_by_worker_threads(
    tmp_path: Path, llm: FakeLLMServer, models: list[HyperModel], queue: dict[str, Any]
) -> None:
    """Two worker threads, HYPER_JUDGE_CONCURRENCY 12: each job judges its chunk's tasks
    at once, so the import has more requests in flight than 2 threads x 2 orders, and the
    one limiter the tasks share never lets more than 12 through."""
    llm.responder = ScriptedJudge(delay=0.2)
    settings = judge_settings(
        tmp_path, llm.base_url, threads=2, hyper_judge_concurrency=12, **queue
    )
    model = start(settings, models)
    model.setup(PROJECT, CONFIG_5POINT, None)
    model.webhook(WebhookEvent.model_validate(tasks_created([task(i) for i in range(1, 41)])))
    wait_until(lambda: all_routed(model, 40), timeout=60, what="40 tasks routed")
    assert 2 * 2 < llm.max_in_flight <= 12


def test_a_chunk_is_tagged_and_judged_at_once_on_one_worker_thread(
    tmp_path: Path, llm: FakeLLMServer, models: list[HyperModel]
) -> None:
    """One worker thread, one chunk: every task's tag and both orders in flight together."""
    llm.responder = ScriptedJudge(delay=0.3)
    settings = judge_settings(
        tmp_path, llm.base_url, threads=1, hyper_tagger=True, hyper_judge_concurrency=64
    )
    model = start(settings, models)
    model.setup(PROJECT, CONFIG_5POINT, None)
    n = CHUNK
    model.webhook(WebhookEvent.model_validate(tasks_created([task(i) for i in range(1, n + 1)])))
    wait_until(lambda: all_routed(model, n), timeout=60, what=f"{n} tasks routed")
    assert len(llm.requests) == 3 * n  # a tag and two orders each
    assert llm.max_in_flight > 2 * INITIAL_WINDOW  # past the slow start: all at once


@pytest.mark.postgres
@pytest.mark.redis
def test_two_backends_on_postgres_and_redis_share_the_work_within_the_budget(
    tmp_path: Path,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    models: list[HyperModel],
) -> None:
    """The multi-worker deployment: a webhook to one backend's app stores its tasks in
    PostgreSQL and enqueues them on Redis; both backends' consumers route them. Each task
    is judged once, by one backend, and the shared budget ledger is exact."""
    n, judges, servers = 60, [ScriptedJudge(delay=0.05), ScriptedJudge(delay=0.05)], []
    for scripted in judges:
        servers.append(FakeLLMServer().start())
        servers[-1].responder = scripted
    shared = {
        "database_url": postgres_server.create_database(),
        "redis_url": redis_server.fresh_url(),
        "hyper_budget": 0.25,
        "threads": 2,
    }
    try:
        # the second backend first: started later, it would re-enqueue the stored import
        second = start(judge_settings(tmp_path / "b", servers[1].base_url, **shared), models)
        first = judge_settings(tmp_path / "a", servers[0].base_url, **shared)
        with serve(first, immediate=False) as (client, model):
            client.post("/setup", json=setup_body())
            client.post(
                "/webhook", json=tasks_created([task(i, "biased") for i in range(1, n + 1)])
            )
            wait_until(lambda: all_routed(model, n), timeout=60, what=f"{n} tasks routed")
            health = client.get("/health").json()
    finally:
        for server in servers:
            server.stop()
    decisions = [second.store.decision(PROJECT, i) for i in range(1, n + 1)]
    assert sorted(d.sequence for d in decisions) == list(range(1, n + 1))
    assert sum(d.route == "human" for d in decisions) == 15  # floor(0.25 x 60)
    calls = [scripted.calls for scripted in judges]
    assert all(calls), "one backend did no work"
    assert not calls[0].keys() & calls[1].keys(), "a task was judged by both backends"
    assert calls[0] + calls[1] == {f"task {i}": 2 for i in range(1, n + 1)}  # both orders
    assert health["queue"] == "redis" and health["pending_jobs"] == 0


# -- the consumer in a process of its own (QUEUE_CONSUMER=process, what `serve` runs) -------


def test_a_killed_consumer_process_is_replaced_and_its_work_done_once_then_stopped(
    tmp_path: Path, llm: FakeLLMServer, models: list[HyperModel]
) -> None:
    judge = ScriptedJudge(delay=0.05)  # the kill comes while the import is being judged
    llm.responder = judge
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.25, queue_consumer="process")
    n = 40
    model = start(settings, models)
    assert model.consumer is not None
    model.setup(PROJECT, CONFIG_5POINT, None)
    first = model.consumer.pid
    imported = tasks_created([task(i, "biased") for i in range(1, n + 1)])
    model.webhook(WebhookEvent.model_validate(imported))
    wait_until(lambda: bool(judge.calls), timeout=180, what="the consumer process judging")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: model.consumer.pid not in (None, first), what="another consumer")
    wait_until(lambda: all_routed(model, n), timeout=180, what=f"{n} tasks routed")
    decisions = [model.store.decision(PROJECT, i) for i in range(1, n + 1)]
    assert sorted(d.sequence for d in decisions) == list(range(1, n + 1))
    assert sum(d.route == "human" for d in decisions) == 10  # floor(0.25 x 40)
    second = model.consumer.pid
    model.stop()
    with pytest.raises(ProcessLookupError):  # stopped, and reaped
        os.kill(second, 0)
