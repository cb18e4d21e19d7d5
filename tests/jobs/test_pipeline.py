"""The import flow for one task: reading, judging, routing within budget, write-back."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from lm.fake_llm_server import FakeLLMServer, anthropic_error
from server.harness import (
    CONFIG_3WAY,
    CONFIG_5POINT,
    LS_KEY,
    PROJECT,
    FakeLabelStudio,
    ScriptedJudge,
    judge_settings,
    make_settings,
    task,
    tasks_created,
)

from hyper_ls_backend.core.comparison import Comparison, JudgeVerdict
from hyper_ls_backend.core.policy import (
    AUDIT_SEED,
    SETTLED_HUMAN_REASON,
    SETTLED_REASON,
    Decision,
    Route,
)
from hyper_ls_backend.eval.campaign import CampaignSettings, replay
from hyper_ls_backend.jobs.pipeline import SETTLE_FROM, RouterRegistry
from hyper_ls_backend.priors import load_default_router
from hyper_ls_backend.server.model import HyperModel
from hyper_ls_backend.server.schemas import WebhookEvent
from hyper_ls_backend.store import Store


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Any]:
    """``build(settings, config)``: a set-up immediate-mode model; stopped at teardown."""
    models: list[HyperModel] = []

    def make(settings: Any, config: str = CONFIG_5POINT, extra: Any = None) -> HyperModel:
        model = HyperModel.build(settings, immediate=True)
        model.start()
        model.setup(PROJECT, config, extra)
        models.append(model)
        return model

    yield make
    for model in models:
        model.stop()


def import_tasks(model: HyperModel, tasks: list[dict[str, Any]]) -> None:
    outcome = model.webhook(WebhookEvent.model_validate(tasks_created(tasks)))
    assert outcome.startswith("received"), outcome


# -- malformed tasks ------------------------------------------------------------------------

MALFORMED = {
    "missing-response": ({"prompt": "p", "response_a": "x"}, "data.response_b"),
    "missing-prompt": ({"response_a": "x", "response_b": "y"}, "data.prompt"),
    "empty-prompt": ({"prompt": "   ", "response_a": "x", "response_b": "y"}, "empty"),
    "both-empty": ({"prompt": "p", "response_a": "", "response_b": " "}, "both empty"),
    "non-text-prompt": ({"prompt": 42, "response_a": "x", "response_b": "y"}, "int, not text"),
    "non-text-response": (
        {"prompt": "p", "response_a": ["x"], "response_b": "y"},
        "list, not text",
    ),
    "huge-text": (
        {"prompt": "p", "response_a": "x" * 1_000_001, "response_b": "y"},
        "limit 1,000,000",
    ),
    "bad-context": (
        {"prompt": "p", "response_a": "x", "response_b": "y", "context": [1, 2]},
        "data.context",
    ),
    "bad-tags": ({"prompt": "p", "response_a": "x", "response_b": "y", "tags": [1]}, "tags"),
}


@pytest.mark.parametrize(("data", "named"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_task_goes_to_humans_with_the_reason(
    build: Any,
    tmp_path: Path,
    llm: FakeLLMServer,
    judge: ScriptedJudge,
    data: dict[str, Any],
    named: str,
) -> None:
    model = build(judge_settings(tmp_path, llm.base_url, hyper_budget=0.0))
    import_tasks(model, [{"id": 1, "data": data}, task(2, "a")])
    bad, good = model.store.decision(PROJECT, 1), model.store.decision(PROJECT, 2)
    assert bad.route == "human" and bad.forced
    assert bad.reasons[0].startswith("task could not be read")
    assert named in bad.reasons[0]
    assert "task 1" not in judge.calls  # never sent to the judge
    assert model.store.task(PROJECT, 1).problem is not None
    assert good.route == "ai"  # the batch goes on


@pytest.mark.parametrize("data", [None, "a string", [1, 2]], ids=["null", "string", "list"])
def test_a_task_whose_data_is_not_an_object_goes_to_humans(
    build: Any, tmp_path: Path, data: Any
) -> None:
    model = build(make_settings(tmp_path))
    import_tasks(model, [{"id": 1, "data": data}])
    decision = model.store.decision(PROJECT, 1)
    assert decision.route == "human"
    assert "'data' is missing or not an object" in decision.reasons[0]


# -- judge failures and successes -----------------------------------------------------------


def test_judge_failures_go_to_humans_after_the_retries_are_exhausted(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge, fast_retries: None
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_judge_max_attempts=3)
    model = build(settings, extra={"hyper_budget": 0.0})
    import_tasks(model, [task(1, "fail")])
    decision = model.store.decision(PROJECT, 1)
    output = model.store.judge_output(PROJECT, 1)
    assert judge.calls["task 1"] == 6  # 3 attempts in each answer order
    assert decision.route == "human" and decision.forced
    assert decision.reasons[0].startswith("judge failed after retries")
    assert "HTTP 500" in decision.reasons[0]
    assert decision.judge_label is None
    assert output is not None and output.error and output.verdict["label"] is None


def test_a_judge_that_recovers_within_its_retries_is_used(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge, fast_retries: None
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_judge_max_attempts=3)
    model = build(settings, extra={"hyper_budget": 0.0})
    llm.script(anthropic_error(500), anthropic_error(529))  # then the scripted verdicts
    import_tasks(model, [task(1, "b")])
    decision = model.store.decision(PROJECT, 1)
    assert len(llm.requests) == 4
    assert decision.route == "ai"
    assert decision.judge_label == "B" and decision.judge_confidence == 1.0


def test_a_judge_failure_is_forced_to_humans_even_with_no_budget(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    model = build(
        judge_settings(tmp_path, llm.base_url, hyper_judge_max_attempts=1, hyper_budget=0.0)
    )
    import_tasks(model, [task(1, "a"), task(2, "fail"), task(3, "a")])
    routes = [model.store.decision(PROJECT, i).route for i in (1, 2, 3)]
    assert routes == ["ai", "human", "ai"]


def running_within_budget(decisions: list[Any], budget: float) -> bool:
    """Never more humans than floor(budget x k) after the first k decisions."""
    running = 0
    for k, decision in enumerate(sorted(decisions, key=lambda d: d.sequence), start=1):
        running += decision.route is Route.HUMAN
        if running > math.floor(budget * k + 1e-9):
            return False
    return True


@pytest.mark.parametrize(
    ("budget", "n"), [(0.25, 20), (0.3, 37), (0.5, 21), (1.0, 20), (0.0, 24), (0.1, 25)]
)
def test_an_import_of_judged_tasks_sends_exactly_floor_budget_times_n_to_humans(
    build: Any,
    tmp_path: Path,
    llm: FakeLLMServer,
    judge: ScriptedJudge,
    budget: float,
    n: int,
) -> None:
    # a position-biased judge: every task looks equally worth a human. The streaming router
    # alone under-spent here (0 of floor(0.1 x 25) = 2 at budget 0.1): an import decided
    # as one ranked batch gets exactly floor(b x N).
    model = build(judge_settings(tmp_path, llm.base_url, hyper_budget=budget))
    import_tasks(model, [task(i, "biased") for i in range(1, n + 1)])
    decisions = [model.store.decision(PROJECT, i) for i in range(1, n + 1)]
    assert not any(d.forced for d in decisions)
    assert sum(d.route is Route.HUMAN for d in decisions) == math.floor(budget * n)
    assert sorted(d.sequence for d in decisions) == list(range(1, n + 1))


@pytest.mark.parametrize(("budget", "n"), [(0.3, 17), (0.5, 9), (0.25, 6)])
def test_a_small_import_is_streamed_and_never_ahead_of_the_budget(
    build: Any,
    tmp_path: Path,
    llm: FakeLLMServer,
    judge: ScriptedJudge,
    budget: float,
    n: int,
) -> None:
    model = build(judge_settings(tmp_path, llm.base_url, hyper_budget=budget))
    import_tasks(model, [task(i, PLANS[i % len(PLANS)]) for i in range(1, n + 1)])
    decisions = [model.store.decision(PROJECT, i) for i in range(1, n + 1)]
    assert all(d is not None for d in decisions)
    assert running_within_budget(decisions, budget)


PLANS = ["a", "b", "tie", "a-slight", "biased"]


def test_a_mixed_batch_never_exceeds_the_budget(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    n, budget = 40, 0.25
    model = build(judge_settings(tmp_path, llm.base_url, hyper_budget=budget))
    import_tasks(model, [task(i, PLANS[i % len(PLANS)]) for i in range(1, n + 1)])
    humans = model.store.decision_counts().get((PROJECT, "human"), 0)
    assert 0 < humans <= math.floor(budget * n)


def test_a_mixed_batch_spends_exactly_its_budget(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    n, budget = 40, 0.25
    model = build(judge_settings(tmp_path, llm.base_url, hyper_budget=budget))
    import_tasks(model, [task(i, PLANS[i % len(PLANS)]) for i in range(1, n + 1)])
    counts = model.store.decision_counts()
    assert counts.get((PROJECT, "human"), 0) == math.floor(budget * n)


def test_concurrent_routing_of_one_import_decides_it_once_within_the_budget(
    build: Any, tmp_path: Path, llm: FakeLLMServer
) -> None:
    llm.responder = ScriptedJudge(delay=0.005)
    n, budget = 32, 0.25
    model = build(judge_settings(tmp_path, llm.base_url, hyper_budget=budget))
    model.store.record_tasks(PROJECT, [task(i, "biased") for i in range(1, n + 1)])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: model.pipeline.route_task(PROJECT, i), [*range(1, n + 1)] * 2))
    decisions = [model.store.decision(PROJECT, i) for i in range(1, n + 1)]
    assert sorted(d.sequence for d in decisions) == list(range(1, n + 1))
    assert sum(d.route is Route.HUMAN for d in decisions) == math.floor(budget * n)


def test_concurrent_routing_of_small_imports_never_overspends_the_budget(
    build: Any, tmp_path: Path, llm: FakeLLMServer
) -> None:
    llm.responder = ScriptedJudge(delay=0.005)
    n, budget = 32, 0.25
    model = build(judge_settings(tmp_path, llm.base_url, hyper_budget=budget))
    for start in range(1, n + 1, 4):  # eight imports of four tasks: each is streamed
        model.store.record_tasks(PROJECT, [task(i, "biased") for i in range(start, start + 4)])
    with ThreadPoolExecutor(8) as pool:
        routed = list(
            pool.map(lambda i: model.pipeline.route_task(PROJECT, i), [*range(1, n + 1)] * 2)
        )
    assert all(d is not None for d in routed)
    decisions = [model.store.decision(PROJECT, i) for i in range(1, n + 1)]
    assert sorted(d.sequence for d in decisions) == list(range(1, n + 1))
    assert running_within_budget(decisions, budget)


def test_a_projects_extra_params_set_its_budget(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    model = build(
        judge_settings(tmp_path, llm.base_url, hyper_budget=0.0), extra={"hyper_budget": 1.0}
    )
    import_tasks(model, [task(i, "a") for i in range(1, 5)])
    assert model.store.decision_counts() == {(PROJECT, "human"): 4}


def test_without_a_judge_every_task_goes_to_humans_forced(build: Any, tmp_path: Path) -> None:
    model = build(make_settings(tmp_path, hyper_budget=0.0))
    import_tasks(model, [task(1), task(2)])
    for task_id in (1, 2):
        decision = model.store.decision(PROJECT, task_id)
        assert decision.route == "human" and decision.forced
        assert "no LM judge configured" in decision.reasons[0]


def test_route_task_twice_changes_nothing(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    model = build(judge_settings(tmp_path, llm.base_url))
    import_tasks(model, [task(1, "a")])
    first = model.store.decision(PROJECT, 1)
    again = model.pipeline.route_task(PROJECT, 1)
    assert (again.route, again.sequence, again.score) == (first.route, first.sequence, first.score)
    assert judge.calls["task 1"] == 2


def test_route_task_for_an_unknown_project_raises_lookup_error(build: Any, tmp_path: Path) -> None:
    model = build(make_settings(tmp_path))
    with pytest.raises(LookupError, match="project 999 is unknown"):
        model.pipeline.route_task(999, 1)


# -- write-back (a tiny local Label Studio) --------------------------------------------------


def test_decisions_are_written_back_to_label_studio(
    build: Any,
    tmp_path: Path,
    llm: FakeLLMServer,
    judge: ScriptedJudge,
    label_studio: FakeLabelStudio,
) -> None:
    settings = judge_settings(
        tmp_path,
        llm.base_url,
        hyper_budget=0.0,
        hyper_judge_max_attempts=1,
        label_studio_url=label_studio.url,
        label_studio_api_key=LS_KEY,
    )
    model = build(settings, config=CONFIG_3WAY)
    tasks = [task(1, "b"), task(2, "fail")]
    label_studio.tasks = {t["id"]: {**t["data"], "edited": True} for t in tasks}
    import_tasks(model, tasks)
    ai, human = model.store.decision(PROJECT, 1), model.store.decision(PROJECT, 2)
    assert ai.written_at is not None and human.written_at is not None
    assert ai.prediction_id is not None and ai.annotation_id is not None
    assert human.prediction_id is None and human.annotation_id is None
    data_1, data_2 = label_studio.tasks[1], label_studio.tasks[2]
    assert data_1["hyper_route"] == "ai" and data_1["prompt"].startswith("[judge:b]")
    assert data_2["hyper_route"] == "human" and "judge failed" in data_2["hyper_reason"]
    assert data_1["edited"] and data_2["edited"], "set in the data as Label Studio holds it"
    (prediction,) = label_studio.predictions[1]
    assert (
        prediction["result"][0]["value"] == {"choices": ["B"]} and 2 not in label_studio.predictions
    )
    posts = [(p, b) for m, p, _, b in label_studio.requests if m == "POST"]
    annotated = next(
        i for i, (p, _) in enumerate(posts) if p.startswith("/api/tasks/1/annotations")
    )
    routed = next(
        i
        for i, (p, b) in enumerate(posts)
        if "add_data_field" in p and b["value_name"] == "hyper_route"
    )
    assert annotated < routed, "the route shows once the annotation exists"
    assert not model.store.unwritten_decisions()


def test_predict_mode_writes_a_prediction_but_no_annotation(
    build: Any,
    tmp_path: Path,
    llm: FakeLLMServer,
    judge: ScriptedJudge,
    label_studio: FakeLabelStudio,
) -> None:
    settings = judge_settings(
        tmp_path,
        llm.base_url,
        hyper_budget=0.0,
        label_studio_url=label_studio.url,
        label_studio_api_key=LS_KEY,
    )
    model = build(settings, extra={"hyper_ai_mode": "predict"})
    import_tasks(model, [task(1, "a")])
    decision = model.store.decision(PROJECT, 1)
    assert decision.prediction_id is not None and decision.annotation_id is None
    assert not any("/annotations" in p for p in label_studio.paths("POST"))


def test_a_task_deleted_in_label_studio_before_write_back_is_not_retried_forever(
    build: Any,
    tmp_path: Path,
    llm: FakeLLMServer,
    judge: ScriptedJudge,
    label_studio: FakeLabelStudio,
) -> None:
    label_studio.deleted_tasks.add(2)
    settings = judge_settings(
        tmp_path,
        llm.base_url,
        hyper_budget=0.0,
        label_studio_url=label_studio.url,
        label_studio_api_key=LS_KEY,
    )
    model = build(settings)
    import_tasks(model, [task(1, "a"), task(2, "a")])
    gone = model.store.decision(PROJECT, 2)
    assert gone is not None and gone.written_at is not None and gone.prediction_id is None
    assert model.store.decision(PROJECT, 1).prediction_id is not None
    assert not model.store.unwritten_decisions()
    assert not any("/tasks/2/annotations" in p for p in label_studio.paths("POST"))


# -- one policy offline and in the server ---------------------------------------------------


def replayed(model: HyperModel, n: int, campaign: CampaignSettings) -> list[Decision]:
    """What ``simulate --online``'s replay decides for tasks 1..n as the server judged
    them, arriving in ``campaign``'s imports."""
    outputs = model.store.judge_outputs(PROJECT, range(1, n + 1))
    stream = [
        Comparison.model_validate(record.comparison).with_judge(
            JudgeVerdict.model_validate(outputs[record.task_id].verdict)
        )
        for record in model.store.tasks(PROJECT, range(1, n + 1))
    ]
    prior = model.pipeline.routers.prior
    return replay(prior, stream, "frozen", campaign, seed=AUDIT_SEED).decisions


def test_the_server_and_the_offline_replay_make_the_same_decisions(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    """Three imports of 25 (ranked) and one of 7 (streamed), with consistent, tied and
    order-flipping verdicts and audits: ``simulate --online``'s replay of the same arrivals
    in the same imports decides exactly as the server did."""
    budget, audit_share, n, size = 0.25, 0.2, 82, 25
    settings = judge_settings(
        tmp_path, llm.base_url, hyper_budget=budget, hyper_audit_share=audit_share
    )
    model = build(settings)
    tasks = [task(i, PLANS[i % len(PLANS)]) for i in range(1, n + 1)]
    for start in range(0, n, size):
        import_tasks(model, tasks[start : start + size])
    offline = replayed(model, n, CampaignSettings(budget, batch_size=size, audit_share=audit_share))
    served = [model.store.decision(PROJECT, i).decision() for i in range(1, n + 1)]
    assert served == offline
    assert any(d.audit for d in served) and any("doubtful" in d.reasons[0] for d in served)


# -- imports decided together, restarts and /predict -----------------------------------------


def test_an_import_is_ranked_whatever_order_its_tasks_were_judged_in(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    n = 24
    imports = [task(i, PLANS[i % len(PLANS)]) for i in range(1, n + 1)]
    decided = []
    for order, root in ((range(1, n + 1), "in-order"), (range(n, 0, -1), "reversed")):
        model = build(judge_settings(tmp_path / root, llm.base_url, hyper_budget=0.25))
        model.store.record_tasks(PROJECT, imports)
        routed = [model.pipeline.route_task(PROJECT, i) for i in order]
        assert routed[:-1] == [None] * (n - 1)  # waiting for the rest of the import
        decided.append({i: model.store.decision(PROJECT, i).decision() for i in range(1, n + 1)})
    assert decided[0] == decided[1]
    assert sum(d.route is Route.HUMAN for d in decided[0].values()) == 6


def test_a_big_import_settles_part_of_it_and_writes_it_back_while_the_rest_is_judged(
    build: Any,
    tmp_path: Path,
    llm: FakeLLMServer,
    judge: ScriptedJudge,
    label_studio: FakeLabelStudio,
) -> None:
    """An import of 240 (twelve jobs of 20, run in turn): once half of it is judged, and
    each time what is left has halved, the judged tasks the budget is sure to pass by, or
    (near the end) sure to reach, whatever the rest turns out to be, are decided and
    written back; the import's final decision
    changes none of them, and every decision is the one the whole import decided at once
    gets offline."""
    budget, audit_share, n = 0.2, 0.05, SETTLE_FROM + 40
    settings = judge_settings(
        tmp_path,
        llm.base_url,
        hyper_budget=budget,
        hyper_audit_share=audit_share,
        label_studio_url=label_studio.url,
        label_studio_api_key=LS_KEY,
    )
    model = build(settings)
    tasks = [task(i, PLANS[i % len(PLANS)]) for i in range(1, n + 1)]
    label_studio.tasks = {t["id"]: dict(t["data"]) for t in tasks}
    import_tasks(model, tasks)
    decisions = [model.store.decision(PROJECT, i) for i in range(1, n + 1)]
    settled = [d for d in decisions if d.settled]
    final = [d for d in decisions if not d.settled]
    assert len([d for d in settled if d.route is Route.AI]) > n / 3
    assert [d for d in settled if d.route is Route.HUMAN]  # the highest, near the end
    assert max(d.sequence for d in settled) < min(d.sequence for d in final)
    assert max(d.written_at for d in settled) < min(d.created_at for d in final)
    for d in settled:
        assert label_studio.tasks[d.task_id]["hyper_route"] == d.route.value
    at_once = replayed(model, n, CampaignSettings(budget, batch_size=n, audit_share=audit_share))
    added = {Route.AI: [SETTLED_REASON], Route.HUMAN: [SETTLED_HUMAN_REASON]}
    for record, whole in zip(decisions, at_once, strict=True):
        served = record.decision()
        if record.settled:
            said = [] if served.forced else added[served.route]
            assert served.reasons == [*whole.reasons, *said]
            served = replace(served, reasons=whole.reasons, settled=False)
        assert served == whole
    assert sum(d.route is Route.HUMAN for d in decisions) == math.floor(budget * n)


def test_predict_on_a_task_whose_import_is_being_judged_decides_it_alone_at_once(
    build: Any, tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    n = 24
    model = build(judge_settings(tmp_path, llm.base_url, hyper_budget=0.25))
    model.store.record_tasks(PROJECT, [task(i, "a") for i in range(1, n + 1)])
    (result,) = model.predict(PROJECT, [task(3, "a")])
    early = model.store.decision(PROJECT, 3)
    assert early is not None and early.sequence == 1
    assert result["model_version"] == early.model_version
    assert judge.calls["task 3"] == 2
    for i in range(1, n + 1):
        model.pipeline.route_task(PROJECT, i)
    decisions = [model.store.decision(PROJECT, i) for i in range(1, n + 1)]
    assert sum(d.route is Route.HUMAN for d in decisions) == 6  # the import's allowance counts it
    assert judge.calls["task 3"] == 2  # not judged again


def test_a_router_of_an_earlier_release_falls_back_to_the_prior(tmp_path: Path, caplog) -> None:
    store = Store(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    store.record_router(PROJECT, "judge-error-old", {"format": "hyper-ls-router/1"}, {}, True)
    prior = load_default_router()
    registry = RouterRegistry(store, prior)
    assert registry.for_project(PROJECT) is prior
    assert registry.for_project(PROJECT) is prior  # logged once, then cached
    warnings = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warnings) == 1 and "judge-error-old" in warnings[0].getMessage()
