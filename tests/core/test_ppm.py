"""HyPER's performance prediction model: hybrid labels, mix sampling, the PPM itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.ppm import (
    MixScorer,
    PerformancePredictionModel,
    cross_validate_ppm,
    hybrid_labels,
    knapsack_mix,
    mix_vectors,
    random_mix,
    sample_mixes,
)
from hyper_ls_backend.core.proxy_rm import HeldOutScorer, PairEncoder
from hyper_ls_backend.core.strategies import PPMStrategy

from .conftest import SMALL_PPM


def labelled(i: int, human: list[str], judge: dict | None) -> Comparison:
    return Comparison.model_validate(
        {
            "id": str(i),
            "prompt": "p",
            "response_a": "a",
            "response_b": "b",
            "human": human,
            "judge": judge,
        }
    )


def linear_problem(n: int = 400, k: int = 6, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.random((n, k))
    weights = np.array([0.5, -0.3, 0.2, 0.0, 0.8, -0.6])[:k]
    targets = vectors @ weights + 0.4 + noise * rng.standard_normal(n)
    return vectors, targets, weights


def test_hybrid_labels_take_the_human_where_routed_and_the_judge_elsewhere():
    pool = [
        labelled(0, ["A"], {"label": "B"}),  # routed: human
        labelled(1, ["A"], {"label": "B"}),  # not routed: judge
        labelled(2, ["B", "A"], {"label": None}),  # judge failed: human even if not routed
        labelled(3, ["tie"], None),  # no judge at all: human
        labelled(4, [], {"label": "A"}),  # routed but no human vote yet: None
        labelled(5, ["B"], {"label": "tie"}),  # not routed: judge's tie
    ]
    routed = np.array([True, False, False, False, True, False])
    assert hybrid_labels(pool, routed) == [Label.A, Label.B, Label.B, Label.TIE, None, Label.TIE]


def test_hybrid_labels_of_all_human_and_all_judge(comparisons):
    n = len(comparisons)
    assert hybrid_labels(comparisons, np.ones(n, bool)) == [c.first_human for c in comparisons]
    assert hybrid_labels(comparisons, np.zeros(n, bool)) == [c.judge_label for c in comparisons]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knapsack_and_random_mixes_hit_the_exact_budget(featurizer, comparisons, seed):
    features = featurizer.transform(comparisons)
    n = len(comparisons)
    rng = np.random.default_rng(seed)
    for budget in range(n + 1):
        knapsack = knapsack_mix(features, budget, rng)
        uniform = random_mix(n, budget, rng)
        assert knapsack.dtype == bool and uniform.dtype == bool
        assert knapsack.sum() == budget
        assert uniform.sum() == budget


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_mix_fills_a_small_budget_from_one_feature(featurizer, comparisons, seed):
    # two complementary columns: whichever is drawn first fills a small budget on its own
    features = featurizer.transform(comparisons)
    inconsistent = features[:, featurizer.feature_names_.index("judge_consistent=no")] > 0
    assert 5 < inconsistent.sum() < len(comparisons) - 5
    two = np.column_stack([inconsistent, ~inconsistent]).astype(np.float32)
    chosen = knapsack_mix(two, 5, np.random.default_rng(seed))
    assert chosen.sum() == 5
    assert (chosen <= inconsistent).all() or (chosen <= ~inconsistent).all()


def test_mixes_are_reproducible_under_a_seed(featurizer, comparisons):
    features = featurizer.transform(comparisons)
    first = sample_mixes(features, 30, np.random.default_rng(5))
    again = sample_mixes(features, 30, np.random.default_rng(5))
    other = sample_mixes(features, 30, np.random.default_rng(6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_sample_mixes_include_all_human_and_all_judge(featurizer, comparisons):
    features = featurizer.transform(comparisons)
    mixes = sample_mixes(features, 25, np.random.default_rng(0))
    assert mixes.shape == (25, len(comparisons))
    assert mixes[0].all()
    assert not mixes[1].any()
    sizes = mixes[2:].sum(axis=1)
    assert ((sizes >= 1) & (sizes < len(comparisons))).all()
    assert len(set(sizes.tolist())) > 5  # budgets vary


def test_mix_vectors_are_pool_shares_of_each_feature(featurizer, comparisons):
    features = featurizer.transform(comparisons)
    mixes = np.vstack([np.ones(len(features), bool), np.zeros(len(features), bool)])
    vectors = mix_vectors(features, mixes)
    np.testing.assert_allclose(vectors[0], features.mean(axis=0), rtol=1e-6)
    assert not vectors[1].any()
    half = np.arange(len(features)) < len(features) // 2
    np.testing.assert_allclose(
        mix_vectors(features, half[None, :])[0],
        features[half].sum(axis=0) / len(features),
        rtol=1e-6,
    )


def test_ppm_recovers_a_known_linear_target():
    vectors, targets, weights = linear_problem()
    model = PerformancePredictionModel(degree=1).fit(vectors, targets)
    np.testing.assert_allclose(model.coef_, weights, atol=0.02)
    assert model.intercept_ == pytest.approx(0.4, abs=0.02)
    np.testing.assert_allclose(model.predict(vectors), targets, atol=0.02)
    np.testing.assert_allclose(model.linear_terms(len(weights)), model.coef_)


def test_quadratic_ppm_fits_an_interaction_the_linear_one_cannot():
    rng = np.random.default_rng(1)
    vectors = rng.random((400, 3))
    targets = 2.0 * vectors[:, 0] * vectors[:, 1] - vectors[:, 2]
    linear = PerformancePredictionModel(degree=1).fit(vectors, targets)
    quadratic = PerformancePredictionModel(degree=2).fit(vectors, targets)
    linear_error = np.abs(linear.predict(vectors) - targets).mean()
    quadratic_error = np.abs(quadratic.predict(vectors) - targets).mean()
    assert quadratic_error < 0.02 < linear_error
    # degree-1 columns come first: the linear terms are the first n_features coefficients
    assert quadratic.linear_terms(3).shape == (3,)


def test_linear_terms_are_the_papers_top_k_gain_in_a_large_pool():
    vectors, targets, weights = linear_problem()
    model = PerformancePredictionModel(degree=2).fit(vectors, targets)
    n, pool = len(weights), 100_000
    empty = model.predict(np.zeros((1, n)))[0]
    gain = model.predict(np.eye(n) / pool) - empty  # one comparison alone to humans
    np.testing.assert_allclose(gain * pool, model.linear_terms(n), rtol=1e-3, atol=1e-6)


def test_ppm_round_trips_through_json():
    vectors, targets, _ = linear_problem(noise=0.05)
    model = PerformancePredictionModel(degree=2).fit(vectors, targets)
    data = json.loads(json.dumps(model.to_dict()))
    again = PerformancePredictionModel.from_dict(data)
    assert again.degree == 2
    assert again.alpha_ == model.alpha_
    np.testing.assert_allclose(again.predict(vectors), model.predict(vectors), atol=1e-4)
    assert PerformancePredictionModel.from_dict(again.to_dict()).to_dict() == again.to_dict()


def test_cross_validated_ppm_quality_is_sane():
    vectors, targets, _ = linear_problem(noise=0.05)
    quality = cross_validate_ppm(vectors, targets, degree=1, folds=5, seed=0)
    assert quality.degree == 1
    assert quality.n_mixes == len(targets)
    assert 0.9 < quality.spearman <= 1.0
    assert 0.0 < quality.rmse < 0.08  # close to the noise level
    assert cross_validate_ppm(vectors, targets, degree=1, folds=5, seed=0) == quality


def test_cross_validated_ppm_on_noise_has_no_rank_correlation():
    rng = np.random.default_rng(2)
    quality = cross_validate_ppm(rng.random((300, 4)), rng.random(300), degree=1, folds=5)
    assert abs(quality.spearman) < 0.3


def test_mix_scorer_scores_the_hybrid_labels(comparisons):
    pool = [c for c in comparisons if c.group != "g000"]
    held_out = [c for c in comparisons if c.group == "g000"]
    encoder = PairEncoder()
    scorer = MixScorer(pool, held_out, encoder)
    reference = HeldOutScorer(
        encoder.transform(pool), encoder.transform(held_out), [c.reference_label for c in held_out]
    )
    routed = np.arange(len(pool)) % 3 == 0
    assert scorer.score(routed) == pytest.approx(reference.accuracy(hybrid_labels(pool, routed)))
    assert 0.0 <= scorer.score(np.ones(len(pool), bool)) <= 1.0


def test_ppm_strategy_samples_mixes_on_each_split(featurizer, comparisons):
    strategy = PPMStrategy(**SMALL_PPM)
    vectors, targets, *_ = strategy.training_mixes(featurizer.transform(comparisons), comparisons)
    n = SMALL_PPM["n_mixes"] * SMALL_PPM["n_splits"]
    assert vectors.shape == (n, len(featurizer.feature_names_))
    assert targets.shape == (n,)
    assert ((targets >= 0) & (targets <= 1)).all()
    assert targets.std() > 0


def test_ppm_strategy_needs_labels_in_two_groups(featurizer, comparisons):
    one_group = [c for c in comparisons if c.group == "g000"]
    with pytest.raises(ValueError, match="at least 2 groups"):
        PPMStrategy(**SMALL_PPM).fit(
            featurizer.transform(one_group), one_group, featurizer.feature_names_
        )
