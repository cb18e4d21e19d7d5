"""The campaign policy: exact budgets per ranked batch, streaming for small ones, audits
with their inclusion probabilities, doubtful verdicts first, and the tie rule."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from hyper_ls_backend.core.comparison import Comparison, JudgeVerdict, Label
from hyper_ls_backend.core.guarantee import Certificate
from hyper_ls_backend.core.policy import (
    AUDIT_REASON,
    AUDIT_SEED,
    JUDGE_FAILED_REASON,
    MIN_RANKED_BATCH,
    SCORE_WINDOW,
    SETTLED_HUMAN_REASON,
    SETTLED_REASON,
    CampaignPolicy,
    Candidate,
    Decision,
    LedgerState,
    Route,
    budget_count,
)
from hyper_ls_backend.core.strategies import STRATEGIES, PPMStrategy, stable_uniform

from .synthetic import make_comparisons

BUDGETED = [name for name, cls in STRATEGIES.items() if cls.fixed_human_share is None]
FAILURES = tuple(range(5, 600, 37))


@pytest.fixture(scope="module")
def stream() -> list[Comparison]:
    """600 unseen comparisons, with a failed judge every 37th."""
    return make_comparisons(600, seed=7, n_groups=30, judge_failures=FAILURES)


def candidates(comparisons: list[Comparison]) -> list[Candidate]:
    return [Candidate(c.id, c) for c in comparisons]


def humans(decisions: list[Decision]) -> set[str]:
    return {d.id for d in decisions if d.route is Route.HUMAN}


def run(router, comparisons: list[Comparison], budget: float, audit_share: float = 0.0):
    """Stream ``comparisons`` one at a time, checking the budget ledger at every step."""
    policy = CampaignPolicy(budget, audit_share)
    fixed = router.strategy.fixed_human_share  # all-human / all-judge ignore the budget
    share = budget if fixed is None else fixed
    ledger, decisions, free_humans = LedgerState(), [], 0
    for seen, comparison in enumerate(comparisons, start=1):
        (decision,) = policy.decide(candidates([comparison]), ledger, router)
        ledger = ledger.after([decision])
        decisions.append(decision)
        if decision.route is Route.HUMAN and not comparison.judge_failed:
            free_humans += 1
            # a chosen human never takes the ledger (forced ones included) past the budget
            assert ledger.n_human <= budget_count(share, seen)
        assert free_humans <= budget_count(share, seen)
    return decisions


# -- streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("budget", [0.1, 0.25, 0.5])
def test_streaming_never_exceeds_the_budget_share_so_far(routers, stream, name, budget):
    decisions = run(routers[name], stream[:200], budget, audit_share=0.1)
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
    assert humans(decisions) == failed
    for decision in decisions:
        if decision.id in failed:
            assert decision.forced
            assert decision.reasons == [JUDGE_FAILED_REASON]


@pytest.mark.parametrize("name", ["random", "judge-consistency", "judge-error", "hyper"])
def test_streaming_uses_most_of_the_budget_on_a_long_stream(routers, stream, name):
    decisions = run(routers[name], stream, 0.25)
    assert len(humans(decisions)) >= 0.8 * math.floor(0.25 * len(stream))


def test_streaming_sends_higher_scores_to_humans(routers, stream):
    decisions = run(routers["judge-error"], stream, 0.25)
    chosen = [d.score for d in decisions if d.route is Route.HUMAN and not d.forced]
    others = [d.score for d in decisions if d.route is Route.AI]
    assert np.mean(chosen) > np.mean(others)


def test_streaming_catches_judge_errors_above_the_random_rate(routers, stream):
    wrong = {c.id for c in stream if c.judge_label is not None and c.judge_label != c.first_human}
    caught = {
        name: len(humans(run(routers[name], stream, 0.25)) & wrong) / len(wrong)
        for name in ("random", "judge-error")
    }
    assert caught["judge-error"] > 1.5 * caught["random"]


def test_streaming_all_human_and_all_judge(routers, stream):
    assert all(d.route is Route.HUMAN for d in run(routers["all-human"], stream[:50], 0.1))
    all_judge = run(routers["all-judge"], stream[:50], 0.9)
    assert humans(all_judge) == {c.id for c in stream[:50] if c.judge_failed}


def test_streaming_is_label_blind_and_repeatable(routers, stream):
    first = run(routers["judge-error"], stream[:150], 0.3, audit_share=0.2)
    blind = run(routers["judge-error"], [c.without_labels() for c in stream[:150]], 0.3, 0.2)
    assert blind == first
    assert run(routers["judge-error"], stream[:150], 0.3, 0.2) == first


def test_a_small_batch_is_streamed_as_if_its_tasks_came_one_by_one(routers, stream):
    router, batch = routers["judge-error"], stream[: MIN_RANKED_BATCH - 1]
    policy = CampaignPolicy(0.3, audit_share=0.2)
    together = policy.decide(candidates(batch), LedgerState(), router)
    assert together == run(router, batch, 0.3, audit_share=0.2)


def test_the_score_window_is_bounded():
    decision = Decision("x", Route.AI, 0.5, [])
    ledger = LedgerState().after([decision] * (SCORE_WINDOW + 5))
    assert len(ledger.recent_scores) == SCORE_WINDOW and ledger.n_decided == SCORE_WINDOW + 5


# -- ranked batches -------------------------------------------------------------------------


def replay(policy, router, comparisons, sizes):
    """Decide ``comparisons`` as consecutive imports of ``sizes``; per import, the ledger
    after it."""
    ledger, start, out = LedgerState(), 0, []
    for size in sizes:
        decisions = policy.decide(candidates(comparisons[start : start + size]), ledger, router)
        ledger = ledger.after(decisions)
        out.append((decisions, ledger))
        start += size
    return out


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("budget", [0.1, 0.25, 0.5])
def test_every_ranked_batch_ends_on_the_exact_cumulative_budget(routers, stream, name, budget):
    clean = [c for c in stream if not c.judge_failed]
    sizes = [25, 7, 3, 40, 1, 60, 20]  # ranked batches and trickles in between
    policy = CampaignPolicy(budget, audit_share=0.1)
    for (decisions, ledger), size in zip(
        replay(policy, routers[name], clean, sizes), sizes, strict=True
    ):
        assert len(decisions) == size
        assert ledger.n_human <= budget_count(budget, ledger.n_decided)
        if size >= MIN_RANKED_BATCH:
            assert ledger.n_human == budget_count(budget, ledger.n_decided)


def test_a_ranked_batch_takes_up_what_streaming_left_unspent(routers, stream):
    router, clean = routers["judge-error"], [c for c in stream if not c.judge_failed]
    policy = CampaignPolicy(0.25, audit_share=0.0)
    ledger = LedgerState(n_decided=100, n_human=10)  # 15 short of floor(0.25 x 100)
    decisions = policy.decide(candidates(clean[:40]), ledger, router)
    assert len(humans(decisions)) == budget_count(0.25, 140) - 10
    over = LedgerState(n_decided=100, n_human=40)  # forced tasks overspent it: never negative
    assert not humans(policy.decide(candidates(clean[:40]), over, router))


def test_a_ranked_batch_sends_its_highest_scores_whatever_order_it_finished_in(routers, stream):
    router, batch = routers["judge-error"], [c for c in stream if not c.judge_failed][:50]
    policy = CampaignPolicy(0.3, audit_share=0.1)
    decisions = policy.decide(candidates(batch), LedgerState(), router)
    shuffled = [batch[i] for i in np.random.default_rng(0).permutation(len(batch))]
    again = policy.decide(candidates(shuffled), LedgerState(), router)
    assert {d.id: d for d in again} == {d.id: d for d in decisions}
    picked = [d.score for d in decisions if d.route is Route.HUMAN and not d.audit]
    judged = [d.score for d in decisions if d.route is Route.AI]
    assert min(picked) >= max(judged)


def test_ranked_forced_tasks_take_the_allowance_first_and_always_go(routers, stream):
    router = routers["judge-error"]
    batch = [*candidates(stream[:30]), Candidate("unreadable", problem="task could not be read")]
    decisions = CampaignPolicy(0.1, audit_share=0.0).decide(batch, LedgerState(), router)
    forced = {d.id for d in decisions if d.forced}
    assert forced == {c.id for c in stream[:30] if c.judge_failed} | {"unreadable"}
    assert forced <= humans(decisions)
    assert len(humans(decisions)) == max(len(forced), budget_count(0.1, 31))
    assert decisions[-1].reasons == ["task could not be read"] and decisions[-1].score == 0.0


def test_router_route_is_the_policys_ranked_batch_without_audits(routers, stream):
    router = routers["judge-error"]
    routed = router.route(stream[:80], 0.25)
    policy = CampaignPolicy(0.25, audit_share=0.0, min_batch=0, doubtful_first=False)
    assert routed.decisions == policy.decide(candidates(stream[:80]), LedgerState(), router)
    assert routed.n_human == budget_count(0.25, 80)


# -- audits -----------------------------------------------------------------------------------


def sure(stream: list[Comparison]) -> list[Comparison]:
    """Comparisons whose verdict is not doubtful (none takes an audit's place)."""
    return [c for c in stream if not c.judge_failed and c.judge.consistent is not False]


def test_audits_come_out_of_the_allowance_with_their_inclusion_probability(routers, stream):
    router, batch = routers["judge-error"], sure(stream)[:60]
    policy = CampaignPolicy(0.25, audit_share=0.2)
    decisions = policy.decide(candidates(batch), LedgerState(), router)
    audits = [d for d in decisions if d.audit]
    allowance = budget_count(0.25, 60)
    assert audits and len(humans(decisions)) == allowance
    assert all(d.route is Route.HUMAN and d.reasons[0] == AUDIT_REASON for d in audits)
    assert all(d.inclusion_probability == 1.0 for d in decisions if not d.audit)
    pool = 60 - allowance  # what the judge would label without audits
    expected = sum(binom.sf(j - 1, pool, 0.2) for j in range(1, allowance + 1)) / pool
    (stated,) = {d.inclusion_probability for d in audits}
    assert stated == pytest.approx(expected)


def test_audit_draws_hit_their_stated_inclusion_probability_over_seeds(routers, stream):
    """Over audit seeds, the pool's mean audit frequency is the stated probability, also
    when the allowance caps the draws (a high audit share on a small allowance)."""
    router, batch = routers["judge-error"], sure(stream)[:40]
    for share, budget in ((0.1, 0.5), (0.6, 0.1)):
        counts, stated = [], set()
        for seed in range(300):
            policy = CampaignPolicy(budget, audit_share=share, seed=seed)
            decisions = policy.decide(candidates(batch), LedgerState(), router)
            audits = [d for d in decisions if d.audit]
            counts.append(len(audits))
            stated |= {round(d.inclusion_probability, 12) for d in audits}
        (probability,) = stated
        pool = 40 - budget_count(budget, 40)
        assert np.mean(counts) / pool == pytest.approx(probability, abs=0.03)
        if share == 0.6:
            assert probability < share  # the cap binds


def test_no_audits_at_share_zero_or_without_room(routers, stream):
    router, batch = routers["judge-error"], [c for c in stream if not c.judge_failed][:40]
    assert not any(
        d.audit for d in CampaignPolicy(0.5, 0.0).decide(candidates(batch), LedgerState(), router)
    )
    assert not any(
        d.audit for d in CampaignPolicy(0.0, 1.0).decide(candidates(batch), LedgerState(), router)
    )


# -- doubtful verdicts and ties --------------------------------------------------------------


def judged(i: int, *verdicts: JudgeVerdict) -> Comparison:
    return Comparison(
        id=f"t{i:03d}",
        prompt=f"question {i}: which answer explains recursion better?",
        response_a=f"a function that calls itself, example {i}",
        response_b=f"recursion is when something repeats, example {i}",
        judge=verdicts[0],
        judges=list(verdicts) if len(verdicts) > 1 else [],
    )


SURE = JudgeVerdict(label=Label.A, consistent=True, confidence=0.9)
FLIPPED = JudgeVerdict(label=Label.A, consistent=False, confidence=0.3)
UNSURE = JudgeVerdict(label=Label.B, consistent=True, confidence=0.0)
TIE_LEANING_A = (
    JudgeVerdict(label=Label.TIE, consistent=True, confidence=0.4),
    JudgeVerdict(label=Label.A, consistent=True, confidence=0.8),
)


def test_doubtful_verdicts_go_to_humans_before_any_score(routers):
    router = routers["judge-error"]
    batch = [judged(i, SURE) for i in range(30)] + [judged(30, FLIPPED), judged(31, UNSURE)]
    decisions = CampaignPolicy(0.1, audit_share=0.0).decide(
        candidates(batch), LedgerState(), router
    )
    assert {"t030", "t031"} <= humans(decisions)
    assert len(humans(decisions)) == budget_count(0.1, 32)
    flipped = next(d for d in decisions if d.id == "t030")
    assert "changed with the order" in flipped.reasons[0]


def test_a_doubtful_verdict_ai_labelled_because_the_budget_is_spent_says_so(routers):
    router = routers["judge-error"]
    batch = [judged(i, FLIPPED) for i in range(20)] + [judged(20, UNSURE)]
    decisions = CampaignPolicy(0.1, audit_share=0.0).decide(
        candidates(batch), LedgerState(), router
    )
    ai = [d for d in decisions if d.route is Route.AI]
    assert len(ai) == 21 - budget_count(0.1, 21)
    for decision in ai:
        assert decision.reasons[0].startswith("budget spent: the judge's answer is doubtful")
    reasons = {d.id: d.reasons[0] for d in ai}
    assert "(it changed with the order)" in reasons.get("t000", reasons[next(iter(reasons))])
    if "t020" in reasons:
        assert "confidence is 0" in reasons["t020"]


def test_doubtful_verdicts_also_lead_in_streaming(routers):
    router = routers["judge-error"]
    ledger = LedgerState(n_decided=9, n_human=0)  # room for one human
    (decision,) = CampaignPolicy(0.2).decide(candidates([judged(0, FLIPPED)]), ledger, router)
    assert decision.route is Route.HUMAN and not decision.audit


LABELS_NO_TIES = LedgerState(human_labels=40, human_ties=1)


@pytest.mark.parametrize(
    ("ledger", "verdicts", "expected", "says"),
    [
        (LABELS_NO_TIES, TIE_LEANING_A, Label.A, "pre-filled A, the side the judge leaned to"),
        (LedgerState(human_labels=40, human_ties=2), TIE_LEANING_A, Label.TIE, None),
        (LedgerState(human_labels=19, human_ties=0), TIE_LEANING_A, Label.TIE, None),
        (LABELS_NO_TIES, (JudgeVerdict(label=Label.TIE, consistent=True),), Label.TIE, None),
        (LABELS_NO_TIES, (SURE,), Label.A, None),
    ],
    ids=["rare-ties", "ties-common", "too-few-labels", "no-lean", "not-a-tie"],
)
def test_a_tie_humans_almost_never_choose_is_prefilled_as_the_judges_lean(
    routers, ledger, verdicts, expected, says
):
    batch = [judged(i, *verdicts) for i in range(MIN_RANKED_BATCH)]
    decisions = CampaignPolicy(0.0, audit_share=0.0).decide(
        candidates(batch), ledger, routers["judge-error"]
    )
    assert {d.route for d in decisions} == {Route.AI}
    assert {d.judge_label for d in decisions} == {expected}
    for decision in decisions:
        assert any(says in reason for reason in decision.reasons) if says else True
        if not says:
            assert not any("leaned" in reason for reason in decision.reasons)


def test_the_ledger_counts_human_labels_and_ties():
    ledger = LedgerState().after([], labels=[Label.A, Label.TIE, Label.B])
    assert (ledger.human_labels, ledger.human_ties) == (3, 1)


# -- a control without a tie (<Pairwise>, a two-choice scale) -------------------------------

TIE = JudgeVerdict(label=Label.TIE, consistent=True, confidence=0.9)


def test_without_a_tie_control_a_judge_tie_goes_to_humans_first(routers):
    batch = [judged(i, SURE) for i in range(30)] + [judged(30, TIE), judged(31, TIE)]
    decisions = CampaignPolicy(0.1, audit_share=0.0, can_prefill_tie=False).decide(
        candidates(batch), LedgerState(), routers["judge-error"]
    )
    assert {"t030", "t031"} <= humans(decisions)
    tie = next(d for d in decisions if d.id == "t030")
    assert "is a tie, which this project's control cannot hold" in tie.reasons[0]


def test_without_a_tie_control_a_judge_tie_is_never_prefilled(routers):
    """Once the budget is spent a tie is left unlabelled and says why, even where humans
    never choose tie (the lean rule is for scales that have a tie)."""
    batch = [judged(i, *TIE_LEANING_A) for i in range(MIN_RANKED_BATCH)]
    for policy in (
        CampaignPolicy(0.0, audit_share=0.0, can_prefill_tie=False),
        CampaignPolicy(0.0, audit_share=0.0, can_prefill_tie=False, min_batch=10_000),
    ):
        decisions = policy.decide(candidates(batch), LABELS_NO_TIES, routers["judge-error"])
        assert {d.route for d in decisions} == {Route.AI}
        assert {d.judge_label for d in decisions} == {None}
        assert all(
            d.reasons[0].startswith("left unlabelled: the judges say tie") for d in decisions
        )


def test_without_a_tie_control_other_verdicts_are_prefilled_as_before(routers):
    batch = [judged(i, SURE) for i in range(MIN_RANKED_BATCH)]
    with_tie = CampaignPolicy(0.2, audit_share=0.0).decide(
        candidates(batch), LedgerState(), routers["judge-error"]
    )
    without = CampaignPolicy(0.2, audit_share=0.0, can_prefill_tie=False).decide(
        candidates(batch), LedgerState(), routers["judge-error"]
    )
    assert without == with_tie


# -- a certified threshold --------------------------------------------------------------------


def certificate_at(threshold: float) -> Certificate:
    return Certificate(
        threshold=threshold,
        target_agreement=0.8,
        confidence=0.9,
        n_calibration=100,
        lower_bound=0.81,
    )


def scored(router, comparisons):
    return dict(zip((c.id for c in comparisons), router.score(comparisons)[0], strict=True))


def test_a_certificate_sends_what_scores_over_its_threshold_to_humans(routers, stream):
    router, batch = routers["judge-error"], stream[:200]
    scores = scored(router, batch)
    threshold = float(np.quantile(list(scores.values()), 0.7))
    decisions = CampaignPolicy(1.0, audit_share=0.0, certificate=certificate_at(threshold)).decide(
        candidates(batch), LedgerState(), router
    )
    for decision, comparison in zip(decisions, batch, strict=True):
        over = scores[comparison.id] > threshold or comparison.judge_failed
        assert (decision.route is Route.HUMAN) == over
        assert decision.certified == (not over)
        if decision.certified:
            assert decision.reasons[0].startswith("certified: scores ")
            assert "agreement >= 80% at 90% confidence" in decision.reasons[0]
        elif not comparison.judge_failed:
            assert decision.reasons[0].startswith("above the certified threshold")


def test_a_certificate_streams_alike(routers, stream):
    router, batch = routers["judge-error"], stream[:60]
    threshold = float(np.median(list(scored(router, batch).values())))
    policy = CampaignPolicy(1.0, audit_share=0.0, certificate=certificate_at(threshold))
    ranked = policy.decide(candidates(batch), LedgerState(), router)
    ledger, streamed = LedgerState(), []
    for comparison in batch:
        streamed += policy.decide(candidates([comparison]), ledger, router)
        ledger = ledger.after(streamed[-1:])
    assert [d.route for d in streamed] == [d.route for d in ranked]


def test_a_cap_that_binds_voids_the_certificate_and_says_so(routers, stream):
    router, batch = routers["judge-error"], stream[:100]
    threshold = float(np.quantile(list(scored(router, batch).values()), 0.5))
    decisions = CampaignPolicy(0.2, audit_share=0.0, certificate=certificate_at(threshold)).decide(
        candidates(batch), LedgerState(), router
    )
    uncertified = CampaignPolicy(0.2, audit_share=0.0).decide(
        candidates(batch), LedgerState(), router
    )
    assert [d.route for d in decisions] == [d.route for d in uncertified]
    assert not any(d.certified for d in decisions)
    assert all(
        d.reasons[0].startswith("not certified: the certified threshold sends") for d in decisions
    )


def test_audits_under_a_certificate_come_from_what_the_judge_would_label(routers, stream):
    router, batch = routers["judge-error"], stream[:300]
    scores = scored(router, batch)
    threshold = float(np.quantile(list(scores.values()), 0.6))
    decisions = CampaignPolicy(0.6, audit_share=0.2, certificate=certificate_at(threshold)).decide(
        candidates(batch), LedgerState(), router
    )
    audits = [d for d in decisions if d.audit]
    assert audits and all(scores[d.id] <= threshold for d in audits)
    assert sum(d.route is Route.HUMAN for d in decisions) <= budget_count(0.6, 300)


def audit_draws(batch, seed=AUDIT_SEED):
    ids = [c.id for c in batch]
    return dict(zip(ids, stable_uniform([f"audit:{i}" for i in ids], seed), strict=True))


def test_calibrating_audits_are_a_uniform_sample_of_every_routable_task(routers, stream):
    router, batch = routers["judge-error"], stream[:300]
    draws = audit_draws(batch)
    decisions = CampaignPolicy(0.3, audit_share=0.1, calibrating=True).decide(
        candidates(batch), LedgerState(), router
    )
    routable = {c.id for c in batch if not c.judge_failed}
    assert {d.id for d in decisions if d.audit} == {i for i in routable if draws[i] < 0.1}
    assert len(humans(decisions)) == budget_count(0.3, 300)
    scores = scored(router, batch)
    audited = [scores[d.id] for d in decisions if d.audit]
    top = np.quantile(list(scores.values()), 0.7)
    assert any(score > top for score in audited)  # high scores are audited too


def test_calibrating_under_a_certificate_audits_above_the_threshold_for_free(routers, stream):
    router, batch = routers["judge-error"], stream[:300]
    scores, draws = scored(router, batch), audit_draws(batch)
    threshold = float(np.quantile(list(scores.values()), 0.7))
    policy = CampaignPolicy(
        0.5, audit_share=0.1, certificate=certificate_at(threshold), calibrating=True
    )
    decisions = policy.decide(candidates(batch), LedgerState(), router)
    routable = {c.id for c in batch if not c.judge_failed}
    assert {d.id for d in decisions if d.audit} == {i for i in routable if draws[i] < 0.1}
    for decision in decisions:
        if decision.route is Route.AI:
            assert decision.certified and scores[decision.id] <= threshold
    over = {i for i in routable if scores[i] > threshold}
    assert over <= humans(decisions)


# -- settling part of an import before the rest is judged ------------------------------------

RANKED_BY_SCORE = [n for n in BUDGETED if n != PPMStrategy.name]


def settle_as_judged(policy, router, batch, ledger, checkpoints, order):
    """Judge ``batch`` in ``order``, settling at each share of it in ``checkpoints``, then
    decide the rest as the server does; the decisions by id, the settled ones' ids, and
    the ledger after."""
    settled: list[Decision] = []
    for share in checkpoints:
        done = {c.id for c in settled}
        judged = [batch[i] for i in order[: int(share * len(batch))] if batch[i].id not in done]
        early = settled_pairs(batch, settled)
        made = policy.settle(judged, len(batch) - len(done), ledger, router, early)
        now = [d for d in made if d is not None]
        settled += now
        ledger = ledger.after(now)
    done = {d.id for d in settled}
    rest = [c for c in batch if c.id not in done]
    final = policy.decide(rest, ledger, router, settled=settled_pairs(batch, settled))
    return {d.id: d for d in [*settled, *final]}, done, ledger.after(final)


def settled_pairs(batch, settled: list[Decision]) -> list[tuple[Candidate, Route]]:
    """What ``settle`` and ``decide`` are told of the tasks settled: each and its route."""
    by_id = {c.id: c for c in batch}
    return [(by_id[d.id], d.route) for d in settled]


@pytest.mark.parametrize("name", RANKED_BY_SCORE)
@pytest.mark.parametrize(("budget", "audit_share", "seed"), [(0.2, 0.05, 0), (0.3, 0.1, 1)])
def test_settling_changes_no_decision_of_the_import(
    routers, stream, name, budget, audit_share, seed
):
    router, batch = routers[name], candidates(stream[:300])
    policy = CampaignPolicy(budget, audit_share)
    ledger = LedgerState(n_decided=37, n_human=9)
    whole = {d.id: d for d in policy.decide(batch, ledger, router)}
    order = np.random.default_rng(seed).permutation(len(batch))
    got, settled, after = settle_as_judged(policy, router, batch, ledger, (0.5, 0.75, 0.9), order)
    assert len(settled) > len(batch) / 3  # most of what goes to the judge, early
    assert after.n_human == budget_count(budget, after.n_decided)
    early_humans = [got[t] for t in settled if got[t].route is Route.HUMAN]
    assert any(d.forced for d in early_humans) and any(not d.forced for d in early_humans)
    for task_id, decision in whole.items():
        early = got[task_id]
        if task_id in settled:
            assert early.settled and early.route is decision.route
            added = {Route.AI: [SETTLED_REASON], Route.HUMAN: [SETTLED_HUMAN_REASON]}
            said = [] if early.forced else added[early.route]
            assert early.reasons == [*decision.reasons, *said]
            assert (early.judge_label, early.score, early.audit) == (
                decision.judge_label,
                pytest.approx(decision.score),
                False,
            )
        else:
            assert early == decision  # audits' inclusion probability too


def test_only_tasks_neither_forced_doubtful_nor_drawn_for_an_audit_settle_to_the_judge(
    routers, stream
):
    """... and a task the judge failed settles to humans at once."""
    router, batch = routers["judge-error"], candidates(stream[:200])
    policy = CampaignPolicy(0.2, audit_share=0.3)
    made = policy.settle(batch[:150], len(batch), LedgerState(), router)
    draws = audit_draws(batch)
    for candidate, decision in zip(batch[:150], made, strict=True):
        comparison = candidate.comparison
        if comparison.judge_failed:
            assert decision is not None and decision.route is Route.HUMAN and decision.forced
        elif decision is not None and decision.route is Route.AI:
            assert comparison.judge.consistent is not False
            assert draws[candidate.id] >= 0.3
    assert any(d is not None and d.route is Route.AI for d in made)


def test_a_human_settles_only_when_every_unjudged_task_above_it_leaves_it_a_place(routers, stream):
    """Half of 400 judged: the allowance (100) minus the 200 unjudged leaves no place for a
    score or a doubtful verdict; with 30 left to judge, the highest scores settle to humans,
    as many of them as the unjudged leave places for."""
    router, batch = routers["judge-error"], candidates(sure(stream)[:400])
    policy = CampaignPolicy(0.25, audit_share=0.0)
    early = policy.settle(batch[:200], len(batch), LedgerState(), router)
    assert not [d for d in early if d is not None and d.route is Route.HUMAN]
    late = policy.settle(batch[:370], len(batch), LedgerState(), router)
    humans = [d for d in late if d is not None and d.route is Route.HUMAN]
    assert len(humans) == 100 - 30  # every unjudged task may rank above them
    final = {d.id: d for d in policy.decide(batch, LedgerState(), router)}
    assert all(final[d.id].route is Route.HUMAN for d in humans)
    assert all(SETTLED_HUMAN_REASON in d.reasons for d in humans)


def test_nothing_settles_while_the_allowance_could_reach_it(routers, stream):
    """With an allowance as big as the judged part, any of it could still be picked."""
    router, batch = routers["judge-error"], candidates(sure(stream)[:100])
    policy = CampaignPolicy(0.5, audit_share=0.0)
    assert set(policy.settle(batch[:50], len(batch), LedgerState(), router)) == {None}
    assert set(policy.settle(batch[:10], 10, LedgerState(), router)) == {None}  # streamed


@pytest.mark.parametrize(
    "policy",
    [
        CampaignPolicy(0.2, certificate=certificate_at(0.5)),
        CampaignPolicy(0.2, calibrating=True),
    ],
)
def test_nothing_settles_under_a_certificate_or_while_calibrating(routers, stream, policy):
    batch = candidates(stream[:100])
    assert set(policy.settle(batch[:90], len(batch), LedgerState(), routers["judge-error"])) == {
        None
    }


def test_nothing_settles_under_the_ppm_selection(routers, stream):
    batch = candidates(stream[:100])
    ppm = routers[PPMStrategy.name]
    assert set(CampaignPolicy(0.2).settle(batch[:90], len(batch), LedgerState(), ppm)) == {None}


def test_a_settled_task_is_never_picked_even_when_the_ledger_moved_meanwhile(routers, stream):
    """Another import spending less than its share between the settling and the rest
    gives this one more places than the settling counted on: they go to the next highest
    scores, the budget stays exact, and what was written back stays true."""
    router, batch = routers["judge-error"], candidates(sure(stream)[:120])
    policy = CampaignPolicy(0.2, audit_share=0.0)
    made = policy.settle(batch[:100], len(batch), LedgerState(), router)
    settled = [d for d in made if d is not None]
    ledger = LedgerState().after(settled)
    ledger = replace(ledger, n_decided=ledger.n_decided + 50)  # 50 decided, none human
    done = {d.id for d in settled}
    rest = [c for c in batch if c.id not in done]
    final = policy.decide(rest, ledger, router, settled=settled_pairs(batch, settled))
    after = ledger.after(final)
    assert after.n_human == budget_count(0.2, after.n_decided)
    assert len(humans([*settled, *final])) == budget_count(0.2, 170)


@pytest.mark.parametrize("moved", ["humans spent elsewhere", "a certificate came"])
def test_settled_decisions_stand_when_the_import_would_now_be_decided_otherwise(
    routers, stream, moved
):
    """Between the settling and the rest, another import spent 40 human places (forced,
    over its share), or the project got a certificate: ranked as if undecided, the import
    would now decide some settled tasks otherwise. They stand (they are in Label Studio
    already), and the rest is ranked alone on the ledger as it stands."""
    router, batch = routers["judge-error"], candidates(sure(stream)[:400])
    policy = CampaignPolicy(0.25, audit_share=0.0)
    settled = [d for d in policy.settle(batch[:370], len(batch), LedgerState(), router) if d]
    assert {Route.AI, Route.HUMAN} <= {d.route for d in settled}
    ledger = LedgerState().after(settled)
    if moved == "a certificate came":
        threshold = float(np.median([d.score for d in settled if d.route is Route.HUMAN]))
        policy = replace(policy, certificate=certificate_at(threshold))
    else:
        ledger = replace(ledger, n_decided=ledger.n_decided + 40, n_human=ledger.n_human + 40)
    done = {d.id for d in settled}
    rest = [c for c in batch if c.id not in done]
    final = policy.decide(rest, ledger, router, settled=settled_pairs(batch, settled))
    alone = policy.decide(rest, ledger, router)  # the rest as an import of its own
    assert [(d.id, d.route) for d in final] == [(d.id, d.route) for d in alone]
    spent = len(humans(settled))
    before = replace(
        ledger, n_decided=ledger.n_decided - len(settled), n_human=ledger.n_human - spent
    )
    whole = {d.id: d for d in policy.decide(batch, before, router)}
    moved_ones = [
        d for d in settled if (whole[d.id].route, whole[d.id].certified) != (d.route, False)
    ]
    assert moved_ones  # it did move


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("budget", "audit_share"), [(0.2, 0.1), (0.3, 0.2), (0.1, 0.3)])
def test_settling_at_every_step_changes_no_decision(routers, stream, seed, budget, audit_share):
    """Settling each time another 5% of the import is judged, from half of it on, in a
    random order: every settled task is decided as the whole import decides it (the bounds
    on what the unjudged and the audits can take are exact enough to settle most, and never
    wrong)."""
    router = routers["judge-error"]
    # without doubtful verdicts the scores get places, so the audits' bound matters
    batch = candidates((sure(stream) if seed % 2 else stream)[:400])
    policy = CampaignPolicy(budget, audit_share)
    whole = {d.id: d for d in policy.decide(batch, LedgerState(), router)}
    order = np.random.default_rng(seed).permutation(len(batch))
    checkpoints = np.arange(0.5, 1.0, 0.05)
    got, settled, after = settle_as_judged(policy, router, batch, LedgerState(), checkpoints, order)
    assert after.n_human == budget_count(budget, len(batch))
    assert {(t, got[t].route) for t in settled} == {(t, whole[t].route) for t in settled}
    assert sum(whole[t].route is Route.AI for t in settled) > 0.5 * sum(
        d.route is Route.AI for d in whole.values()
    )
