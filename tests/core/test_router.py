"""The router: the budget guarantee, judge failures, label-blindness, persistence, refits."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyper_ls_backend.core import features as features_module
from hyper_ls_backend.core import router as router_module
from hyper_ls_backend.core.comparison import Comparison, JudgeVerdict, Label
from hyper_ls_backend.core.policy import JUDGE_FAILED_REASON, Route, budget_count
from hyper_ls_backend.core.router import Router, RoutingResult
from hyper_ls_backend.core.strategies import STRATEGIES, LinearStrategy

from .conftest import small_strategy
from .synthetic import make_comparisons, make_records

BUDGETED = [name for name, cls in STRATEGIES.items() if cls.fixed_human_share is None]
LEARNED = [name for name, cls in STRATEGIES.items() if cls.learned]
FLIP = {Label.A: Label.B, Label.B: Label.A, Label.TIE: Label.A}
REASON = re.compile(r"^[^\[\]]+ \[(no )?[\w.:=<\-]+ [+-]\d+\.\d{3}\]$")
"""Words for people, then the feature and its contribution for tools."""


def failed(comparison: Comparison) -> Comparison:
    return comparison.with_judge(JudgeVerdict(label=None, model="broken-judge"))


def humans(result: RoutingResult) -> set[str]:
    return {d.id for d in result.decisions if d.route is Route.HUMAN}


def assert_same_decisions(after: RoutingResult, before: RoutingResult) -> None:
    """Same routes and reasons; scores and reason weights equal up to float noise."""
    assert [(d.id, d.route, d.forced) for d in after.decisions] == [
        (d.id, d.route, d.forced) for d in before.decisions
    ]
    np.testing.assert_allclose(
        [d.score for d in after.decisions], [d.score for d in before.decisions], atol=1e-4
    )
    for new, old in zip(after.decisions, before.decisions, strict=True):
        assert [split_reason(r)[0] for r in new.reasons] == [
            split_reason(r)[0] for r in old.reasons
        ]
        np.testing.assert_allclose(
            [split_reason(r)[1] for r in new.reasons],
            [split_reason(r)[1] for r in old.reasons],
            atol=2e-3,
        )


def split_reason(reason: str) -> tuple[str, float]:
    """``"... [judge_consistent=no +0.840]"`` -> ("... judge_consistent=no", 0.84); text
    reasons -> 0. Words and feature stay together: the words quote the comparison's values
    (its confidence), and these must survive a save and load too."""
    match = re.match(r"^(.*) \[(.+) ([+-]\d+\.\d+)\]$", reason)
    return (f"{match.group(1)} {match.group(2)}", float(match.group(3))) if match else (reason, 0.0)


def expected_allowed(budget: float, n: int) -> set[int]:
    """floor(budget * n); both neighbours when float noise makes the product ambiguous."""
    exact = budget * n
    if abs(exact - round(exact)) < 1e-6:
        return {math.floor(exact), round(exact)}
    return {math.floor(exact)}


# -- the budget guarantee -------------------------------------------------------------------


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(BUDGETED),
    n=st.integers(1, 120),
    budget=st.one_of(
        st.floats(0.0, 1.0),
        st.sampled_from([0.0, 0.01, 0.1, 0.25, 0.29, 0.5, 0.57, 0.75, 0.99, 1.0]),
    ),
    n_failed=st.integers(0, 12),
)
def test_route_sends_exactly_floor_budget_times_n_to_humans(request, name, n, budget, n_failed):
    # fixtures through ``request`` so a falsifying example prints short
    routers, fresh = request.getfixturevalue("routers"), request.getfixturevalue("fresh")
    batch = [failed(c) if i < n_failed else c for i, c in enumerate(fresh[:n])]
    forced = sum(c.judge_failed for c in batch)
    result = routers[name].route(batch, budget)
    assert len(result.decisions) == n
    assert [d.id for d in result.decisions] == [c.id for c in batch]
    assert result.budget in expected_allowed(budget, n)
    assert result.n_human == max(result.budget, forced)
    assert result.forced_human == forced
    assert result.over_budget == (forced > result.budget)
    failed_ids = {c.id for c in batch if c.judge_failed}
    assert failed_ids <= humans(result)


@pytest.mark.parametrize("budget", [0.0, 0.1, 0.5, 1.0])
def test_all_human_and_all_judge_ignore_the_budget(routers, fresh, budget):
    n_failed = sum(c.judge_failed for c in fresh)
    assert routers["all-human"].route(fresh, budget).n_human == len(fresh)
    all_judge = routers["all-judge"].route(fresh, budget)
    assert all_judge.n_human == n_failed
    assert humans(all_judge) == {c.id for c in fresh if c.judge_failed}


@pytest.mark.parametrize(("budget", "n", "allowed"), [(0.29, 100, 29), (0.57, 100, 57)])
def test_decimal_budgets_are_not_cut_by_float_rounding(routers, budget, n, allowed):
    batch = make_comparisons(n, seed=4)
    assert routers["random"].route(batch, budget).n_human == allowed


@pytest.mark.parametrize("budget", [-0.1, 1.01])
def test_budget_outside_zero_one_is_rejected(routers, fresh, budget):
    with pytest.raises(ValueError, match="between 0 and 1"):
        routers["random"].route(fresh, budget)


@pytest.mark.data
@pytest.mark.parametrize("budget", [0.1, 0.25, 0.5])
def test_shipped_prior_routes_real_data_within_the_budget_and_label_blind(mtbench, budget):
    from hyper_ls_backend.priors import load_default_router

    router = load_default_router()
    result = router.route(mtbench, budget)
    assert result.n_human == math.floor(budget * len(mtbench))
    blind = router.route([c.without_labels() for c in mtbench], budget)
    assert blind.decisions == result.decisions
    # the prior sends order-inconsistent verdicts to humans far above their base rate
    routed = [c for c, d in zip(mtbench, result.decisions, strict=True) if d.route is Route.HUMAN]
    share = np.mean([c.judge.consistent is False for c in routed])
    assert share > 1.5 * np.mean([c.judge.consistent is False for c in mtbench])


# -- judge failures --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_failed_judge_always_goes_to_humans_and_counts_against_the_budget(routers, fresh, name):
    result = routers[name].route(fresh, 0.25)
    failures = {c.id for c in fresh if c.judge_failed}
    assert len(failures) == 4
    assert failures <= humans(result)
    if name not in ("all-human", "all-judge"):
        assert result.n_human == math.floor(0.25 * len(fresh))
    for decision in result.decisions:
        if decision.id in failures:
            assert decision.forced
            assert decision.reasons == [JUDGE_FAILED_REASON]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_failures_beyond_the_budget_all_go_and_flag_over_budget(routers, fresh, name):
    clean = [c for c in fresh if not c.judge_failed]
    batch = [failed(c) if i < 6 else c for i, c in enumerate(clean[:10])]
    result = routers[name].route(batch, 0.3)
    assert result.budget == (10 if name == "all-human" else 0 if name == "all-judge" else 3)
    assert result.forced_human == 6
    assert {c.id for c in batch[:6]} <= humans(result)
    if name == "all-human":
        assert not result.over_budget
    else:
        assert result.n_human == 6
        assert result.over_budget


def test_failures_exactly_at_the_budget_are_not_over_it(routers, fresh):
    clean = [c for c in fresh if not c.judge_failed]
    batch = [failed(c) if i < 3 else c for i, c in enumerate(clean[:10])]
    result = routers["judge-error"].route(batch, 0.3)
    assert humans(result) == {c.id for c in batch[:3]}
    assert not result.over_budget


# -- label-blindness, determinism, batch independence ---------------------------------------


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_route_is_label_blind(routers, fresh, name):
    labelled = routers[name].route(fresh, 0.3)
    stripped = routers[name].route([c.without_labels() for c in fresh], 0.3)
    flipped = [
        c.model_copy(update={"human": [FLIP[h] for h in c.human], "gold": Label.TIE}) for c in fresh
    ]
    assert stripped.decisions == labelled.decisions
    assert routers[name].route(flipped, 0.3).decisions == labelled.decisions


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_same_seed_gives_the_same_routing(comparisons, fresh, name):
    first = Router(small_strategy(name, seed=3)).fit(comparisons).route(fresh, 0.3)
    again = Router(small_strategy(name, seed=3)).fit(comparisons).route(fresh, 0.3)
    # two fits are two versions (the fit time is in the name): the same decisions otherwise
    assert [d.to_record() for d in again.decisions] == [d.to_record() for d in first.decisions]


@pytest.mark.parametrize("name", ["random", "judge-consistency"])
def test_different_seeds_route_differently(comparisons, fresh, name):
    first = Router(small_strategy(name, seed=0)).fit(comparisons).route(fresh, 0.3)
    other = Router(small_strategy(name, seed=1)).fit(comparisons).route(fresh, 0.3)
    assert humans(first) != humans(other)
    assert len(humans(first)) == len(humans(other))


@pytest.mark.parametrize("name", BUDGETED)
def test_score_of_a_comparison_does_not_depend_on_its_batch(routers, fresh, name):
    scores, _ = routers[name].score(fresh)
    for i in (0, 17, 63):
        alone, _ = routers[name].score([fresh[i]])
        assert alone[0] == pytest.approx(scores[i], rel=1e-5, abs=1e-6)


def test_learned_strategy_sends_judge_errors_to_humans_more_than_random(routers, comparisons):
    unseen = make_comparisons(400, seed=9, n_groups=20)
    wrong = {c.id for c in unseen if c.judge_label != c.first_human}
    caught = {
        name: len(humans(routers[name].route(unseen, 0.25)) & wrong) / len(wrong)
        for name in ("random", "judge-consistency", "judge-error")
    }
    assert caught["judge-error"] > 1.5 * caught["random"]
    assert caught["judge-consistency"] > 1.5 * caught["random"]


def test_parallel_measuring_matches_one_process_and_reports_progress(routers, fresh, monkeypatch):
    whole = routers["judge-error"].route(fresh, 0.3)
    monkeypatch.setattr(features_module, "PARALLEL_CHUNK", 7)
    seen: list[int] = []
    parallel = routers["judge-error"].route(fresh, 0.3, progress=seen.append, n_jobs=2)
    assert_same_decisions(parallel, whole)
    assert sum(seen) == len(fresh)
    assert len(seen) == math.ceil(len(fresh) / 7)


EMPTY_BATCH = [
    pytest.param(
        name,
    )
    if STRATEGIES[name].learned
    else name
    for name in STRATEGIES
]


@pytest.mark.parametrize("name", EMPTY_BATCH)
def test_empty_batch_routes_to_nothing(routers, name):
    result = routers[name].route([], 0.5)
    assert (result.decisions, result.n_human, result.budget) == ([], 0, 0)


# -- explanations -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_decision_has_reasons(routers, fresh, name):
    for decision in routers[name].route(fresh, 0.3).decisions:
        assert decision.reasons
        assert all(isinstance(r, str) and r for r in decision.reasons)


@pytest.mark.parametrize("name", LEARNED)
def test_linear_reasons_name_a_feature_and_its_signed_weight(routers, fresh, name):
    result = routers[name].route([c for c in fresh if not c.judge_failed], 0.3)
    for decision in result.decisions:
        assert 1 <= len(decision.reasons) <= router_module.N_REASONS
        for reason in decision.reasons:
            assert REASON.match(reason), reason
        weights = [abs(split_reason(r)[1]) for r in decision.reasons]
        assert weights == sorted(weights, reverse=True)


def test_records_have_the_wire_schema(routers, fresh):
    decision = routers["judge-error"].route(fresh, 0.3).decisions[0]
    record = decision.to_record()
    assert set(record) == {"id", "route", "score", "reasons"}
    assert record["route"] in ("human", "ai")
    assert json.loads(json.dumps(record)) == record


# -- persistence ------------------------------------------------------------------------------


SAVE_LOAD = [
    pytest.param(
        name,
    )
    if name == "judge-consistency"
    else name
    for name in STRATEGIES
]


@pytest.mark.parametrize("name", SAVE_LOAD)
def test_save_and_load_give_identical_decisions(routers, fresh, tmp_path, name):
    path = tmp_path / "router.json"
    routers[name].save(path)
    loaded = Router.load(path)
    assert loaded.strategy.name == name
    assert loaded.strategy.get_params() == routers[name].strategy.get_params()
    assert loaded.featurizer.feature_names_ == routers[name].featurizer.feature_names_
    assert loaded.version == routers[name].version
    assert_same_decisions(loaded.route(fresh, 0.3), routers[name].route(fresh, 0.3))
    # saving what was loaded changes nothing
    again = tmp_path / "again.json"
    loaded.save(again)
    assert json.loads(again.read_text()) == json.loads(path.read_text())


def test_load_rejects_files_that_are_not_router_artifacts(tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON router artifact"):
        Router.load(garbage)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else/1"}), encoding="utf-8")
    with pytest.raises(ValueError, match="hyper-ls-router/2"):
        Router.load(other)


# -- refitting --------------------------------------------------------------------------------


def shifted_campaign(n: int) -> list[Comparison]:
    """A campaign where the judge is wrong exactly on math prompts, whatever its consistency."""
    records = make_records(n, seed=2, n_groups=20)
    for r in records:
        truth = r["human"][0]
        wrong = {"A": "B", "B": "A", "tie": "A"}[truth]
        r["judge"]["label"] = wrong if r["meta"]["category"] == "math" else truth
    return [Comparison.model_validate(r) for r in records]


def fresh_only(prior: Router, labelled: list[Comparison]) -> Router:
    strategy = type(prior.strategy)(**prior.strategy.get_params())
    return Router(strategy, featurizer=prior.featurizer).fit(labelled)


@pytest.mark.parametrize("name", LEARNED)
def test_refit_blends_fresh_and_prior_by_label_count(routers, name):
    prior = routers[name]
    labelled = shifted_campaign(60)
    refit = prior.refit(labelled, prior_strength=40.0)
    fresh = fresh_only(prior, labelled)
    n = fresh.strategy.training_["n_labelled"]
    weight = n / (n + 40.0)
    assert isinstance(refit.strategy, LinearStrategy)
    np.testing.assert_allclose(
        refit.strategy.coef_,
        weight * fresh.strategy.coef_ + (1 - weight) * prior.strategy.coef_,
        atol=1e-6,
    )
    assert refit.featurizer.feature_names_ == prior.featurizer.feature_names_
    assert refit.strategy.name == name


def test_refit_moves_toward_fresh_data_as_labels_grow(routers):
    prior = routers["judge-error"]
    campaign = shifted_campaign(400)
    labelled, unseen = campaign[:320], campaign[320:]
    math_ids = {c.id for c in unseen if c.all_tags["category"] == "math"}
    distances, math_shares = [], []
    for n in (20, 80, 320):
        refit = prior.refit(labelled[:n], prior_strength=100.0)
        target, _ = fresh_only(prior, labelled[:n]).score(unseen)
        scores, _ = refit.score(unseen)
        distances.append(np.abs(scores - target).mean())
        routed = humans(refit.route(unseen, 0.25))
        math_shares.append(len(routed & math_ids) / len(routed))
    assert distances[0] > distances[1] > distances[2]
    assert math_shares[0] <= math_shares[1] <= math_shares[2]
    prior_routed = humans(prior.route(unseen, 0.25))
    assert math_shares[2] > len(prior_routed & math_ids) / len(prior_routed) + 0.2
    assert math_shares[2] > 0.6  # the new campaign's judge errors are all on math


def test_refit_leaves_the_prior_untouched(routers, fresh):
    prior = routers["judge-error"]
    coef = prior.strategy.coef_.copy()
    before = prior.route(fresh, 0.3)
    prior.refit(shifted_campaign(60))
    np.testing.assert_array_equal(prior.strategy.coef_, coef)
    assert prior.route(fresh, 0.3).decisions == before.decisions


def test_refit_with_zero_prior_strength_is_the_fresh_fit(routers):
    prior = routers["judge-error"]
    labelled = shifted_campaign(60)
    refit = prior.refit(labelled, prior_strength=0.0)
    np.testing.assert_allclose(refit.strategy.coef_, fresh_only(prior, labelled).strategy.coef_)


def test_refit_of_a_random_router_routes_as_before(routers, fresh):
    prior = routers["random"]
    refit = prior.refit(shifted_campaign(60))
    assert humans(refit.route(fresh, 0.3)) == humans(prior.route(fresh, 0.3))


def test_learned_strategy_needs_judge_right_and_wrong_examples(comparisons):
    always_right = [
        c.with_judge(JudgeVerdict(label=c.first_human, consistent=True)) for c in comparisons
    ]
    with pytest.raises(ValueError, match="both right and wrong"):
        Router("judge-error").fit(always_right)


@pytest.mark.parametrize(
    ("share", "n", "expected"),
    [(0.29, 100, 29), (0.57, 100, 57), (0.5, 3, 1), (0.25, 7, 1), (1.0, 5, 5), (0.0, 9, 0)],
)
def test_budget_count_is_floor_without_float_noise(share: float, n: int, expected: int) -> None:
    assert budget_count(share, n) == expected


# -- explaining a chunk at once ---------------------------------------------------------------


def reference_reasons(router: Router, features: np.ndarray, signals: list) -> list[list[str]]:
    """``Router.explain_signals`` as it was written row by row, before it explained a
    chunk at once."""
    from hyper_ls_backend.core.reasons import reason

    contributions = router.strategy.contributions(features)
    if contributions is None:
        return [[f"{router.strategy.name} strategy"] for _ in range(len(features))]
    centred = contributions - router.strategy.contributions(router.feature_means_[None, :])
    families, family_of = router._families()
    by_family = np.zeros((len(features), len(families)))
    np.add.at(by_family.T, family_of, centred.T)
    names = router.featurizer.feature_names_
    reasons = []
    for i, (row, totals) in enumerate(zip(features, by_family, strict=True)):
        active = {family_of[j]: names[j] for j in np.flatnonzero(row)}
        top = np.argsort(-np.abs(totals), kind="stable")[: router_module.N_REASONS]
        reasons.append(
            [
                reason(active.get(f), families[f], totals[f], signals[i] if signals else None)
                for f in top
                if abs(totals[f]) > 1e-9
            ]
        )
    return reasons


def judged_variously(comparisons: list[Comparison]) -> list[Comparison]:
    """``comparisons`` with confidences, panels (some outvoting the primary), order answers,
    ties and failures, so that every kind of reason is given."""
    labels = ["A", "B", "tie", None]
    varied = []
    for i, comparison in enumerate(comparisons):
        primary = JudgeVerdict.model_validate(
            {
                "label": labels[i % 4],
                "confidence": [None, 0.0, 0.4, 0.9, 1.0][i % 5],
                "orders": {"ab": "A-is-slightly-better", "ba": "B"} if i % 3 == 0 else None,
                "model": "p",
            }
        )
        panel = [JudgeVerdict(label=Label(labels[(i + k) % 3]), model=f"q{k}") for k in (1, 2)]
        varied.append(comparison.with_panel([primary, *panel] if i % 2 else [primary]))
    return varied + comparisons[:10]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_reasons_of_a_chunk_are_the_row_by_row_reasons(routers, fresh, name):
    from hyper_ls_backend.core.signals import judge_signals

    router = routers[name]
    batch = judged_variously(fresh)
    signals = [judge_signals(c) for c in batch]
    _, features = router.score(batch, signals=signals)
    assert router.explain_signals(features, signals) == reference_reasons(router, features, signals)
    assert router.explain_signals(features, None) == reference_reasons(router, features, None)
    assert router.explain_signals(features[:0], []) == []


def test_the_default_routers_reasons_of_a_chunk_are_the_row_by_row_reasons(fresh):
    from hyper_ls_backend.core.signals import judge_signals
    from hyper_ls_backend.priors import load_default_router

    router = load_default_router()
    batch = judged_variously(fresh)
    signals = [judge_signals(c) for c in batch]
    scores, features = router.score(batch, signals=signals)
    reasons = router.explain_signals(features, signals)
    assert reasons == reference_reasons(router, features, signals)
    quoted = " ".join(r for rs in reasons for r in rs)
    assert "judge confidence (" in quoted and "other judges" in quoted
    assert np.array_equal(scores, router.score(batch)[0])
