"""Campaign replays and refits: budget per batch, audits, weights, adoption, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from core.synthetic import make_comparisons

from hyper_ls_backend.core.learning import Refitter, fit_correction
from hyper_ls_backend.core.policy import CampaignPolicy, Candidate, LedgerState, Route, budget_count
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.strategies import judge_errors
from hyper_ls_backend.eval.campaign import (
    GUESSED_TOPICS,
    POLICIES,
    CampaignSettings,
    campaign_metrics,
    model_strength,
    paired_difference,
    replay,
    simulate_online,
    split_for_replay,
    topic_guessing_judge,
)


@pytest.fixture(scope="module")
def data():
    return make_comparisons(600, seed=3, n_groups=60)


@pytest.fixture(scope="module")
def halves(data):
    return split_for_replay(data, "groups", seed=0)


@pytest.fixture(scope="module")
def prior(halves):
    return Router("judge-error").fit(halves[0])


def test_groups_split_keeps_every_group_on_one_side(data, halves):
    prior_data, stream = halves
    assert len(prior_data) + len(stream) == len(data)
    assert not {c.group for c in prior_data} & {c.group for c in stream}


def test_category_split_gives_the_campaign_categories_the_prior_never_saw(data):
    prior_data, stream = split_for_replay(data, "category", seed=1)
    assert not {c.meta["category"] for c in prior_data} & {c.meta["category"] for c in stream}
    with pytest.raises(ValueError, match="unknown split"):
        split_for_replay(data, "nope", seed=0)


MODELS = ("m0", "m1", "m2", "m3", "m4", "m5")


@pytest.fixture(scope="module")
def with_turns_and_models(data):
    # Model mN wins against mK whenever N > K (human vote); each group has both turns.
    rng = np.random.default_rng(5)
    rows = []
    for i, c in enumerate(data):
        a, b = rng.choice(len(MODELS), size=2, replace=False)
        meta = c.meta | {"turn": 1 + (i // 60) % 2, "model_a": MODELS[a], "model_b": MODELS[b]}
        rows.append(c.model_copy(update={"meta": meta, "human": ["A" if a > b else "B"]}))
    return rows


def test_turn_split_gives_the_prior_first_turns_and_the_campaign_second_turns(
    with_turns_and_models,
):
    for seed in range(3):
        prior_data, stream = split_for_replay(with_turns_and_models, "turn", seed)
        assert {c.meta["turn"] for c in prior_data} == {1}
        assert {c.meta["turn"] for c in stream} == {2}
        assert not {c.group for c in prior_data} & {c.group for c in stream}
        assert len(prior_data) + len(stream) == len(with_turns_and_models) // 2
    with pytest.raises(ValueError, match="turn"):
        split_for_replay([c.model_copy(update={"meta": {}}) for c in halves_of(3)], "turn", 0)


def halves_of(n):
    return make_comparisons(n * 10, seed=1, n_groups=n)


def test_models_split_puts_the_weakest_third_on_the_prior_side_only(with_turns_and_models):
    for seed in range(3):
        prior_data, stream = split_for_replay(with_turns_and_models, "models", seed)
        assert not {c.group for c in prior_data} & {c.group for c in stream}
        weak = {"m0", "m1"}  # they lose every vote: the weakest third on any side
        assert all({c.meta["model_a"], c.meta["model_b"]} & weak for c in prior_data)
        assert not any({c.meta["model_a"], c.meta["model_b"]} & weak for c in stream)
        assert prior_data and stream
    strength = model_strength(with_turns_and_models)
    assert sorted(strength, key=strength.get) == list(MODELS)
    with pytest.raises(ValueError, match="model_a"):
        split_for_replay(halves_of(3), "models", 0)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_import_spends_exactly_its_cumulative_budget_audits_included(prior, halves, policy):
    stream = halves[1]
    settings = CampaignSettings(budget=0.3, batch_size=40, audit_share=0.1, refit_every=30)
    trace = replay(prior, stream, policy, settings, seed=0)
    labelled = trace.to_human | trace.audited
    assert not (trace.to_human & trace.audited).any()
    assert trace.audited.any()
    for end in range(settings.batch_size, len(stream) + 1, settings.batch_size):
        assert labelled[:end].sum() == budget_count(settings.budget, end)
    audits = [d for d in trace.decisions if d.audit]
    assert all(0.0 < d.inclusion_probability <= 0.1 for d in audits)


def test_the_replay_is_the_server_policy_import_by_import(prior, halves):
    """Each import is the policy's decision on it, given the ledger of the imports before."""
    stream = halves[1][:130]
    settings = CampaignSettings(budget=0.25, batch_size=50, audit_share=0.2)
    trace = replay(prior, stream, "frozen", settings, seed=3)
    policy = CampaignPolicy(0.25, 0.2, seed=3)
    ledger, expected = LedgerState(), []
    for start in range(0, len(stream), 50):
        batch = stream[start : start + 50]
        decisions = policy.decide(
            [Candidate(c.id, c.without_labels()) for c in batch], ledger, prior
        )
        humans = [
            c.first_human for c, d in zip(batch, decisions, strict=True) if d.route is Route.HUMAN
        ]
        ledger = ledger.after(decisions, [label for label in humans if label is not None])
        expected.extend(decisions)
    assert trace.decisions == expected


def test_replay_is_deterministic_under_a_seed(prior, halves):
    settings = CampaignSettings(refit_every=30)
    first = replay(prior, halves[1], "online", settings, seed=4)
    second = replay(prior, halves[1], "online", settings, seed=4)
    assert (first.to_human == second.to_human).all() and (first.audited == second.audited).all()
    assert first.versions == second.versions


def test_only_the_online_policy_refits(prior, halves):
    settings = CampaignSettings(refit_every=20)
    online = replay(prior, halves[1], "online", settings, seed=0)
    frozen = replay(prior, halves[1], "frozen", settings, seed=0)
    assert online.refits > 0 and frozen.refits == 0
    assert set(frozen.versions) == {prior.version}
    assert len(set(online.versions)) == 1 + online.adopted


def test_learned_routing_catches_more_judge_errors_than_random(prior, halves):
    stream = halves[1]
    settings = CampaignSettings()
    frozen = campaign_metrics(stream, replay(prior, stream, "frozen", settings, seed=0))
    randomly = campaign_metrics(stream, replay(prior, stream, "random", settings, seed=0))
    assert frozen["capture_ratio"] > randomly["capture_ratio"]
    assert frozen["human_share"] == pytest.approx(randomly["human_share"])


def test_metrics_over_a_prefix_count_only_that_prefix(prior, halves):
    stream = halves[1]
    trace = replay(prior, stream, "frozen", CampaignSettings(), seed=0)
    head = campaign_metrics(stream, trace, upto=100)
    labelled = (trace.to_human | trace.audited)[:100]
    assert head["human_share"] == pytest.approx(labelled.mean())


def test_audits_weigh_more_than_the_routers_own_picks(halves):
    refitter = Refitter()
    refitter.observe(halves[1][:10], propensity=1.0)
    refitter.observe(halves[1][10:12], propensity=0.1)
    weights = refitter.weights()
    assert weights.mean() == pytest.approx(1.0)
    assert weights[10] == pytest.approx(10 * weights[0])
    with pytest.raises(ValueError, match="propensity"):
        refitter.observe(halves[1][:1], propensity=0.0)


def test_a_refit_without_a_measurable_held_out_set_is_not_adopted(prior, halves):
    refitter = Refitter()
    refitter.observe(halves[1][:5], propensity=1.0)
    outcome = refitter.refit(prior)
    assert not outcome.adopted and outcome.router is prior
    assert outcome.quality["n_labels"] == 5


def test_a_refit_on_a_campaign_with_new_judge_behaviour_is_adopted(prior, halves):
    # The campaign's judge is wrong exactly where it was consistent: the prior ranks errors
    # backwards here, so a refit on the campaign's labels must measure better and be adopted.
    flipped = [
        c.with_judge(c.judge.model_copy(update={"consistent": not c.judge.consistent}))
        for c in halves[1]
        if c.judge is not None
    ]
    refitter = Refitter(prior_strength=10.0)
    refitter.observe(flipped, propensity=1.0)
    refitter.see(flipped)
    outcome = refitter.refit(prior)
    assert outcome.adopted, outcome.quality
    assert outcome.quality["held_out_auc"] > outcome.quality["current_held_out_auc"]
    assert outcome.router.version != prior.version


def test_online_simulation_reports_every_policy_with_curves(data):
    report = simulate_online(data, CampaignSettings(batch_size=60), seeds=2)
    assert [row["policy"] for row in report["results"]] == list(POLICIES)
    for row in report["results"]:
        assert 0.0 < row["human_share"]["mean"] <= 0.25
        assert len(row["capture_curve"]) >= 4
        assert np.isfinite(row["capture_curve"]).all()


def test_a_refit_that_measures_worse_than_the_current_version_is_refused_but_kept(prior, halves):
    # The current version was fitted on every label, held-out ones included: the candidate,
    # fitted without them, cannot rank their judge errors as well.
    current = Router("judge-error").fit(halves[1])
    refitter = Refitter()
    refitter.observe(halves[1], propensity=1.0)
    outcome = refitter.refit(prior, current=current)
    assert not outcome.adopted and outcome.router is current
    assert outcome.quality["held_out_auc"] < outcome.quality["current_held_out_auc"]
    assert outcome.candidate is not None
    assert outcome.candidate.version not in (current.version, prior.version)


def test_a_huge_penalty_leaves_the_priors_ranking_and_only_recalibrates(prior, halves):
    rows, wrong = judge_errors(halves[1])
    labelled = [halves[1][i] for i in rows]
    design = prior.strategy._design(prior.featurizer.transform(labelled))
    coef, _ = fit_correction(design, wrong, np.ones(len(rows)), prior.strategy.coef_, 1e9)
    ratio = coef[prior.strategy.coef_ != 0] / prior.strategy.coef_[prior.strategy.coef_ != 0]
    assert np.allclose(ratio, ratio[0], atol=1e-6) and ratio[0] > 0
    loose, _ = fit_correction(design, 1 - wrong, np.ones(len(rows)), prior.strategy.coef_, 1.0)
    assert np.corrcoef(design @ loose, design @ prior.strategy.coef_)[0, 1] < 0


def test_a_refit_on_labels_the_prior_already_explains_is_rarely_adopted(prior, halves):
    # Judge errors drawn from the prior's own predicted probabilities: the prior is right,
    # there is nothing to learn, and the cross-validated test must refuse to fit the noise.
    decisive = [c for c in halves[1] if c.judge is not None and c.judge.label in ("A", "B")]
    chance = 1 / (1 + np.exp(-prior.score(decisive)[0]))
    adopted = []
    for draw in range(4):
        wrong = np.random.default_rng(draw).random(len(decisive)) < chance
        labelled = [
            c.model_copy(
                update={"human": ["B" if c.judge.label == "A" else "A"] if w else [c.judge.label]}
            )
            for c, w in zip(decisive, wrong, strict=True)
        ]
        refitter = Refitter()
        refitter.observe(labelled, propensity=1.0)
        outcome = refitter.refit(prior)
        assert outcome.quality["method"] == "correction" and outcome.quality["folds"] == 5
        assert outcome.candidate is not None
        adopted.append(outcome.adopted)
    assert sum(adopted) <= 1, adopted


def test_the_topic_guessing_judge_changes_only_its_blind_categories(halves):
    stream = halves[1]
    shifted = topic_guessing_judge(stream, seed=2)
    assert topic_guessing_judge(stream, seed=2) == shifted
    changed = {c.meta["category"] for c, s in zip(stream, shifted, strict=True) if c != s}
    blind = {s.meta["category"] for s in shifted if s.judge.model == "topic-guess"}
    assert changed <= blind and len(blind) == GUESSED_TOPICS
    for original, guessed in zip(stream, shifted, strict=True):
        assert guessed.human == original.human and guessed.gold == original.gold
        if guessed.meta["category"] in blind:
            assert guessed.judge.consistent and guessed.judge.label in ("A", "B")
        else:
            assert guessed.judge == original.judge


def test_paired_difference_is_per_seed_with_an_interval():
    summary = paired_difference([1.0, 2.0, 3.0], [0.5, 1.0, 2.5])
    assert summary["mean"] == pytest.approx(2 / 3)
    low, high = summary["ci95"]
    assert low < summary["mean"] < high
    assert paired_difference([1.0, 2.0], [1.0, 2.0])["ci95"] == [0.0, 0.0]


def test_with_coefficients_is_a_new_version_of_a_linear_router_only(prior, halves):
    twin = prior.with_coefficients(2 * prior.strategy.coef_, 0.0, 10, halves[1])
    assert twin.version != prior.version and twin.featurizer is prior.featurizer
    consistency = Router("judge-consistency").fit(halves[0])
    with pytest.raises(TypeError, match="not a linear"):
        consistency.with_coefficients(np.zeros(3), 0.0, 1, halves[1])
