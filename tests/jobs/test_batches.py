"""Imports judged through the Message Batches API (the fake server's, the real SDK): sent
once, polled from the database, routed when their answers land, failures asked again."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from lm.fake_llm_server import FakeLLMServer, Recorded, anthropic_error
from server.harness import (
    CONFIG_5POINT,
    PROJECT,
    ScriptedJudge,
    judge_settings,
    task,
    tasks_created,
)

from hyper_ls_backend.lm.pricing import PriceTable
from hyper_ls_backend.server import dashboard
from hyper_ls_backend.server.model import HyperModel
from hyper_ls_backend.server.schemas import WebhookEvent
from hyper_ls_backend.server.status import project_status
from hyper_ls_backend.settings import Settings
from hyper_ls_backend.store.schema import JudgeBatchRecord, utcnow

N = 12
MODEL = "claude-sonnet-4-6"


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Any]:
    """``build(settings)``: a set-up immediate-mode model (its poller is not started: the
    tests poll); stopped at teardown."""
    models: list[HyperModel] = []

    def make(settings: Settings) -> HyperModel:
        model = HyperModel.build(settings, immediate=True)
        model.start()
        model.setup(PROJECT, CONFIG_5POINT, None)
        models.append(model)
        return model

    yield make
    for model in models:
        model.stop()


def batch_settings(tmp_path: Path, llm: FakeLLMServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"hyper_judge_batch": "on", "hyper_judge_model": MODEL}
    return judge_settings(tmp_path, llm.base_url, **{**values, **overrides})


def import_tasks(model: HyperModel, tasks: list[dict[str, Any]]) -> None:
    outcome = model.webhook(WebhookEvent.model_validate(tasks_created(tasks)))
    assert outcome.startswith("received"), outcome


def batched_ab_of(marker: str) -> Callable[[Recorded], bool]:
    """The batched A-B request of the task whose prompt holds ``marker``."""

    def accepts(request: Recorded) -> bool:
        text = request.user_text()
        return "/batches/" in request.path and marker in text and shows_alpha_first(text)

    return accepts


def shows_alpha_first(text: str) -> bool:
    return text.index("ALPHA") < text.index("BETA")


def message_calls(llm: FakeLLMServer) -> int:
    return sum(1 for r in llm.requests if r.path == "/v1/messages")


def test_an_import_is_sent_in_one_batch_and_routed_at_half_price_once_it_ends(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    model = build(batch_settings(tmp_path, llm))
    llm.batch_seconds = 3600

    import_tasks(model, [task(i, "a") for i in range(1, N + 1)])
    assert model.pipeline.batches.poll() == 1  # still in flight
    (batch,) = llm.batches.values()
    undecided = len(model.store.undecided_tasks())
    llm.batch_seconds = 0
    in_flight = model.pipeline.batches.poll()

    assert undecided == N
    assert len(batch.requests) == 2 * N and message_calls(llm) == 0
    assert in_flight == 0 and not model.store.undecided_tasks()
    assert sum(model.store.decision_counts().values()) == N
    output = model.store.judge_output(PROJECT, 1)
    assert output.verdict["label"] == "A" and output.verdict["consistent"]
    assert all(call["batch"] for call in output.calls)
    listed = PriceTable().cost(MODEL, 100, 20)
    assert output.cost_usd == pytest.approx(2 * listed / 2)

    status = project_status(
        model.store, model.settings, PROJECT, model.pipeline.routers.for_project(PROJECT)
    )
    assert status.batches.in_flight == []
    assert status.batches.calls == 2 * N
    assert status.batches.cost_usd == pytest.approx(N * listed)
    assert status.batches.list_cost_usd == pytest.approx(2 * N * listed)
    assert status.spend["cost_usd"] == pytest.approx(N * listed)
    assert status.spend["cost_per_1000_comparisons_usd"] == pytest.approx(1000 * listed)
    page = dashboard.render(status)
    assert f'data-metric="/batches/calls">{2 * N}<' in page and "batch in flight" not in page


def test_a_batch_in_flight_shows_in_status_and_tasks_wait_for_it(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    model = build(batch_settings(tmp_path, llm))
    llm.batch_seconds = 3600
    import_tasks(model, [task(i, "a") for i in range(1, N + 1)])

    # Asked again (a duplicated webhook, /predict): still waiting, nothing sent again.
    import_tasks(model, [task(i, "a") for i in range(1, N + 1)])
    predicted = model.predict(PROJECT, [task(1, "a")])
    status = project_status(
        model.store, model.settings, PROJECT, model.pipeline.routers.for_project(PROJECT)
    )

    assert predicted == [[]]
    assert len(llm.batches) == 1 and message_calls(llm) == 0
    (flight,) = status.batches.in_flight
    assert flight.requests == 2 * N and flight.model == MODEL and flight.status == "in_progress"
    assert flight.batch_id in llm.batches
    page = dashboard.render(status)
    assert "Message Batches sent" in page and flight.batch_id in page


def test_failed_requests_are_asked_again_one_by_one_and_a_lasting_failure_goes_to_humans(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge, fast_retries: None
) -> None:
    model = build(batch_settings(tmp_path, llm, hyper_budget=0.0, hyper_audit_share=0.0))
    # task 2: its A-B request errors in the batch; task 3 expires; task 4 fails every way.
    llm.script(anthropic_error(529, "overloaded"), when=batched_ab_of("task 2:"))
    llm.expire_in_batch = lambda request: "task 3:" in request.user_text()

    import_tasks(model, [task(1, "a"), task(2, "b"), task(3, "a"), task(4, "fail")])
    model.pipeline.batches.poll()

    asked_again = {
        re.search(r"task \d+", r.user_text()).group(0)
        for r in llm.requests
        if r.path == "/v1/messages"
    }
    assert asked_again == {"task 2", "task 3", "task 4"}
    assert judge.calls["task 2"] == 2  # B-A in the batch, then the failed A-B order
    assert judge.calls["task 3"] == 2  # expired in the batch: both orders asked
    assert not model.store.undecided_tasks()
    for task_id, label in ((1, "A"), (2, "B"), (3, "A")):
        decision = model.store.decision(PROJECT, task_id)
        assert decision.route == "ai" and decision.judge_label == label, task_id
    failed = model.store.decision(PROJECT, 4)
    assert failed.route == "human" and failed.forced
    calls = model.store.judge_output(PROJECT, 2).calls
    assert [call["batch"] for call in calls] == [False, True]  # A-B asked again, B-A batched


def test_a_restarted_backend_polls_the_batch_it_sent_and_never_sends_it_again(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = batch_settings(tmp_path, llm)
    llm.batch_seconds = 3600
    first = HyperModel.build(settings, immediate=True)
    first.start()
    first.setup(PROJECT, CONFIG_5POINT, None)
    import_tasks(first, [task(i, "a") for i in range(1, N + 1)])
    first.stop()

    second = HyperModel.build(settings, immediate=True)
    second.start()  # resumes the undecided tasks: they wait for their batch
    llm.batch_seconds = 0
    try:
        second.pipeline.batches.poll()
        undecided = second.store.undecided_tasks()
    finally:
        second.stop()

    assert len(llm.batches) == 1 and message_calls(llm) == 0
    assert undecided == []


def test_small_imports_are_judged_call_by_call_under_auto(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    model = build(batch_settings(tmp_path, llm, hyper_judge_batch="auto"))

    import_tasks(model, [task(i, "a") for i in range(1, 4)])

    assert not llm.batches and message_calls(llm) == 6
    assert not model.store.undecided_tasks()


def test_a_refused_batch_is_judged_call_by_call(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    model = build(batch_settings(tmp_path, llm))
    llm.refuse_batches = anthropic_error(400, "batches are not enabled for this key")

    import_tasks(model, [task(i, "a") for i in range(1, N + 1)])
    model.pipeline.batches.poll()  # routes the import's tasks again, now one by one

    assert not llm.batches and message_calls(llm) == 2 * N
    assert not model.store.undecided_tasks()
    (record,) = model.store.batches_of(PROJECT)
    assert record.status == "refused" and "not enabled" in record.error


def test_a_claim_whose_sender_died_is_released_and_the_batch_sent(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    model = build(batch_settings(tmp_path, llm))
    # A sender that claimed import 1's batch and died before the API answered.
    (claim,) = model.store.claim_batches(PROJECT, 1, [(0, 0, MODEL, 2 * N)])
    import_tasks(model, [task(i, "a") for i in range(1, N + 1)])
    waiting = not llm.batches and len(model.store.undecided_tasks()) == N
    with model.store.session() as s:
        s.get(JudgeBatchRecord, claim.id).created_at = utcnow() - timedelta(hours=1)

    model.pipeline.batches.poll()  # releases the claim; the import's tasks send the batch
    model.pipeline.batches.poll()  # reads it back

    assert waiting
    assert len(llm.batches) == 1 and message_calls(llm) == 0
    assert not model.store.undecided_tasks()


def test_a_batch_the_api_lost_is_judged_call_by_call(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    model = build(batch_settings(tmp_path, llm))
    llm.batch_seconds = 3600
    import_tasks(model, [task(i, "a") for i in range(1, N + 1)])
    llm.batches.clear()  # retrieving it now answers 404

    model.pipeline.batches.poll()

    (record,) = model.store.batches_of(PROJECT)
    assert record.status == "gone"
    assert message_calls(llm) == 2 * N and not model.store.undecided_tasks()


def test_a_project_may_turn_batching_on_when_the_backend_has_it_off(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    model = HyperModel.build(batch_settings(tmp_path, llm, hyper_judge_batch="off"), immediate=True)
    model.start()
    try:
        model.setup(PROJECT, CONFIG_5POINT, {"hyper_judge_batch": "on"})
        import_tasks(model, [task(i, "a") for i in range(1, 4)])
        model.pipeline.batches.poll()
    finally:
        model.stop()

    assert len(llm.batches) == 1 and message_calls(llm) == 0
