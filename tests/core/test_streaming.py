"""The streaming router: one comparison at a time, never past the budget share so far."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.router import (
    JUDGE_FAILED_REASON,
    Decision,
    Route,
    StreamingRouter,
    budget_count,
)
from hyper_ls_backend.core.strategies import STRATEGIES

from .synthetic import make_comparisons

BUDGETED = [name for name, cls in STRATEGIES.items() if cls.fixed_human_share is None]
FAILURES = tuple(range(5, 600, 37))


@pytest.fixture(scope="module")
def stream() -> list[Comparison]:
    """600 unseen comparisons, with a failed judge every 37th."""
    return make_comparisons(600, seed=7, n_groups=30, judge_failures=FAILURES)


def run(router, comparisons: list[Comparison], budget: float) -> list[Decision]:
    """Stream ``comparisons`` through ``router``, checking the budget ledger at every step."""
    streaming = StreamingRouter(router, budget)
    fixed = router.strategy.fixed_human_share  # all-human / all-judge ignore the budget
    share = budget if fixed is None else fixed
    decisions = []
    free_humans = 0
    for seen, comparison in enumerate(comparisons, start=1):
        decision = streaming.decide(comparison)
        decisions.append(decision)
        if decision.route is Route.HUMAN and not comparison.judge_failed:
            free_humans += 1
            # a chosen human never takes the ledger (forced ones included) past the budget
            assert streaming.n_human <= budget_count(share, seen)
        assert free_humans <= budget_count(share, seen)
        assert streaming.n_seen == seen
    assert streaming.n_forced == sum(c.judge_failed for c in comparisons)
    assert streaming.n_human == sum(d.route is Route.HUMAN for d in decisions)
    return decisions


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("budget", [0.1, 0.25, 0.5])
def test_streaming_never_exceeds_the_budget_share_so_far(routers, stream, name, budget):
    decisions = run(routers[name], stream[:200], budget)
    assert all(d.reasons for d in decisions)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(BUDGETED),
    budget=st.floats(0.0, 1.0),
    start=st.integers(0, 550),
    length=st.integers(1, 50),
)
def test_streaming_budget_holds_for_any_budget_and_stream(request, name, budget, start, length):
    routers, stream = request.getfixturevalue("routers"), request.getfixturevalue("stream")
    run(routers[name], stream[start : start + length], budget)


def test_failed_judges_always_go_to_humans_even_with_no_room(routers, stream):
    decisions = run(routers["judge-error"], stream[:100], 0.0)
    failed = {c.id for c in stream[:100] if c.judge_failed}
    assert failed
    assert {d.id for d in decisions if d.route is Route.HUMAN} == failed
    for decision in decisions:
        if decision.id in failed:
            assert decision.forced
            assert decision.reasons == [JUDGE_FAILED_REASON]


@pytest.mark.parametrize("name", ["random", "judge-consistency", "judge-error", "hyper"])
def test_streaming_uses_most_of_the_budget_on_a_long_stream(routers, stream, name):
    decisions = run(routers[name], stream, 0.25)
    n_human = sum(d.route is Route.HUMAN for d in decisions)
    assert n_human >= 0.8 * math.floor(0.25 * len(stream))


def test_streaming_sends_higher_scores_to_humans(routers, stream):
    decisions = run(routers["judge-error"], stream, 0.25)
    chosen = [d.score for d in decisions if d.route is Route.HUMAN and not d.forced]
    others = [d.score for d in decisions if d.route is Route.AI]
    assert np.mean(chosen) > np.mean(others)


def test_streaming_catches_judge_errors_above_the_random_rate(routers, stream):
    wrong = {c.id for c in stream if c.judge_label is not None and c.judge_label != c.first_human}
    caught = {}
    for name in ("random", "judge-error"):
        routed = {d.id for d in run(routers[name], stream, 0.25) if d.route is Route.HUMAN}
        caught[name] = len(routed & wrong) / len(wrong)
    assert caught["judge-error"] > 1.5 * caught["random"]


def test_streaming_all_human_and_all_judge(routers, stream):
    assert all(d.route is Route.HUMAN for d in run(routers["all-human"], stream[:50], 0.1))
    all_judge = run(routers["all-judge"], stream[:50], 0.9)
    assert {d.id for d in all_judge if d.route is Route.HUMAN} == {
        c.id for c in stream[:50] if c.judge_failed
    }


def test_streaming_is_label_blind_and_repeatable(routers, stream):
    first = run(routers["judge-error"], stream[:150], 0.3)
    blind = run(routers["judge-error"], [c.without_labels() for c in stream[:150]], 0.3)
    assert blind == first
    assert run(routers["judge-error"], stream[:150], 0.3) == first


def test_streaming_window_is_bounded(routers, stream):
    streaming = StreamingRouter(routers["random"], 0.2, window_size=25)
    for comparison in stream[:60]:
        streaming.decide(comparison)
    assert len(streaming.window) == 25
