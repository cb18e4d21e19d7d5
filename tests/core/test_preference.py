"""The preference models: Bradley-Terry and the General Preference Model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.ppm import MixScorer
from hyper_ls_backend.core.preference import (
    BradleyTerry,
    GeneralPreferenceModel,
    PreferenceEncoder,
    make_preference_model,
    probability,
)
from hyper_ls_backend.core.proxy_rm import ranking_accuracy
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.strategies import PPMStrategy
from hyper_ls_backend.eval.preference import cyclic_comparisons

from .conftest import SMALL_PPM

MODELS = {
    "bradley-terry": lambda seed=0: BradleyTerry(),
    "gpm": lambda seed=0: GeneralPreferenceModel(seed=seed),
    "gpm-gated": lambda seed=0: GeneralPreferenceModel(gate=True, seed=seed),
}


def swapped(comparison: Comparison) -> Comparison:
    return comparison.model_copy(
        update={"response_a": comparison.response_b, "response_b": comparison.response_a}
    )


@pytest.fixture(scope="module")
def cycle() -> tuple[list[Comparison], list[Comparison]]:
    return cyclic_comparisons(800, seed=0), cyclic_comparisons(400, seed=1)


@pytest.mark.parametrize("name", MODELS)
def test_p_a_beats_b_plus_p_b_beats_a_is_exactly_one(name, comparisons):
    model = MODELS[name]().fit(comparisons, [c.first_human for c in comparisons])
    forward = model.predict_proba(comparisons)
    backward = model.predict_proba([swapped(c) for c in comparisons])
    assert np.abs(forward - 0.5).max() > 0.01
    assert np.all(forward + backward == 1.0)
    np.testing.assert_array_equal(
        model.margin([swapped(c) for c in comparisons]), -model.margin(comparisons)
    )


def test_probability_is_exactly_complementary_for_any_margin():
    margins = np.random.default_rng(0).normal(0, 20, 10_000)
    assert np.all(probability(margins) + probability(-margins) == 1.0)
    assert probability(np.zeros(1))[0] == 0.5


def test_gpm_recovers_a_cyclic_preference_where_bradley_terry_is_a_coin_flip(cycle):
    train, test = cycle
    labels = [c.first_human for c in train]
    truth = [c.first_human for c in test]
    gpm = GeneralPreferenceModel().fit(train, labels)
    bt = BradleyTerry().fit(train, labels)
    # the labels follow the cycle 90% of the time: 0.9 is the best any model can do
    assert ranking_accuracy(gpm.margin(test), truth) >= 0.85
    assert 0.4 <= ranking_accuracy(bt.margin(test), truth) <= 0.6


def test_gpm_block_expresses_the_cycle_between_pure_style_responses(cycle):
    """Pure-style responses around the loop 0 > 1 > 2 > 3 > 4 > 0 (s beats s+1 mod 5): no
    scalar reward orders all five pairs this way; GPM does."""
    train, _ = cycle
    gpm = GeneralPreferenceModel().fit(train, [c.first_human for c in train])
    words = {s: " ".join(f"s{s}w{i}" for i in range(20)) for s in range(5)}
    loop = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)]
    pairs = [
        Comparison(id=str(i), prompt="p", response_a=words[a], response_b=words[b])
        for i, (a, b) in enumerate(loop)
    ]
    assert np.all(gpm.predict_proba(pairs) > 0.5)


@pytest.mark.parametrize("name", ["gpm", "gpm-gated"])
def test_the_same_seed_fits_the_same_model(name, comparisons):
    labels = [c.first_human for c in comparisons]
    first = MODELS[name](seed=3).fit(comparisons, labels).margin(comparisons)
    again = MODELS[name](seed=3).fit(comparisons, labels).margin(comparisons)
    other = MODELS[name](seed=4).fit(comparisons, labels).margin(comparisons)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_weight_of_two_is_the_row_twice(comparisons):
    labels = [c.first_human for c in comparisons]
    weight = np.ones(len(comparisons))
    weight[:20] = 2.0
    weighted = BradleyTerry().fit(comparisons, labels, sample_weight=weight)
    doubled = BradleyTerry().fit(comparisons + comparisons[:20], labels + labels[:20])
    np.testing.assert_allclose(weighted.coef_, doubled.coef_, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_weight_zero_and_no_label_leave_a_row_out(name, comparisons):
    labels = [c.first_human for c in comparisons]
    kept = comparisons[40:]
    reference = MODELS[name]().fit(kept, labels[40:]).margin(comparisons)
    weight = np.r_[np.zeros(40), np.ones(len(kept))]
    zero = MODELS[name]().fit(comparisons, labels, sample_weight=weight).margin(comparisons)
    unlabelled = MODELS[name]().fit(comparisons, [None] * 40 + labels[40:]).margin(comparisons)
    # the same objective; GPM's optimiser stops after max_iter, not at an exact optimum
    tolerance = 1e-5 if name == "bradley-terry" else 1e-2
    np.testing.assert_allclose(zero, reference, atol=tolerance)
    np.testing.assert_allclose(unlabelled, reference, atol=tolerance)


@pytest.mark.parametrize("name", MODELS)
def test_weights_pull_the_model_toward_the_heavy_rows(name, cycle):
    """Half the pairs say A, half B (by row parity): weighting the A half wins."""
    train, _ = cycle
    labels = [Label.A if i % 2 else Label.B for i in range(len(train))]
    weight = np.where(np.arange(len(train)) % 2, 10.0, 0.1)
    model = MODELS[name]().fit(train, labels, sample_weight=weight)
    odd = [c for i, c in enumerate(train) if i % 2]
    assert model.predict_proba(odd).mean() > model.predict_proba(train[::2]).mean()


def test_a_tie_is_no_preference():
    pair = Comparison(id="t", prompt="p", response_a="good words here", response_b="bad text")
    model = BradleyTerry().fit([pair, swapped(pair)], [Label.TIE, Label.TIE])
    assert model.predict_proba([pair])[0] == pytest.approx(0.5, abs=1e-6)


def test_encoded_pairs_fit_and_score_as_the_comparisons(comparisons):
    labels = [c.first_human for c in comparisons]
    pairs = PreferenceEncoder().transform(comparisons)
    from_pairs = BradleyTerry().fit(pairs, labels).margin(pairs.rows(np.arange(10)))
    from_texts = BradleyTerry().fit(comparisons, labels).margin(comparisons[:10])
    np.testing.assert_allclose(from_pairs, from_texts)


def test_fitting_needs_a_label_and_a_known_name(comparisons):
    with pytest.raises(ValueError, match="no labelled"):
        BradleyTerry().fit(comparisons[:3], [None, None, None])
    with pytest.raises(ValueError, match="unknown preference model"):
        make_preference_model("elo")


def test_bradley_terry_predicts_held_out_mtbench_humans(mtbench):
    held_out = {g for i, g in enumerate(sorted({c.group for c in mtbench})) if i % 4 == 0}
    train = [c for c in mtbench if c.group not in held_out]
    test = [c for c in mtbench if c.group in held_out]
    model = BradleyTerry().fit(train, [c.first_human for c in train])
    assert ranking_accuracy(model.margin(test), [c.reference_label for c in test]) > 0.6


@pytest.mark.parametrize("proxy_rm", ["bradley-terry", "gpm"])
def test_the_ppm_scores_mixes_with_a_preference_model_and_keeps_the_choice(proxy_rm, comparisons):
    strategy = PPMStrategy(**{**SMALL_PPM, "n_mixes": 12}, proxy_rm=proxy_rm)
    router = Router(strategy).fit(comparisons)
    assert router.strategy.training_["n_mixes"] == 24
    assert 0.0 < router.strategy.training_["target_mean"] < 1.0
    loaded = Router.from_dict(json.loads(json.dumps(router.to_dict())))
    assert loaded.strategy.get_params()["proxy_rm"] == proxy_rm


def test_an_unknown_proxy_reward_model_is_refused(comparisons):
    with pytest.raises(ValueError, match="unknown proxy reward model"):
        MixScorer(comparisons[:20], comparisons[20:40], proxy_rm="elo")
