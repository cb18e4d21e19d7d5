"""The proxy reward model and its fast held-out scorer."""

from __future__ import annotations

import numpy as np
import pytest

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.proxy_rm import (
    HeldOutScorer,
    PairEncoder,
    ProxyRewardModel,
    preference_targets,
    ranking_accuracy,
)

FLIP = {Label.A: Label.B, Label.B: Label.A, Label.TIE: Label.TIE, None: None}


def swapped(comparison: Comparison) -> Comparison:
    return comparison.model_copy(
        update={"response_a": comparison.response_b, "response_b": comparison.response_a}
    )


@pytest.fixture(scope="module")
def encoder() -> PairEncoder:
    return PairEncoder()


@pytest.fixture(scope="module")
def split(comparisons):
    """Pool and held-out sets with disjoint groups."""
    pool = [c for c in comparisons if c.group not in {"g000", "g001", "g002"}]
    held_out = [c for c in comparisons if c.group in {"g000", "g001", "g002"}]
    return pool, held_out


def labellings(pool: list[Comparison]) -> dict[str, list[Label | None]]:
    rng = np.random.default_rng(3)
    return {
        "human": [c.first_human for c in pool],
        "judge": [c.judge_label for c in pool],
        "random": [rng.choice([Label.A, Label.B, Label.TIE, None]) for _ in pool],
        "all-A": [Label.A for _ in pool],
    }


@pytest.mark.parametrize("labelling", ["human", "judge", "random", "all-A"])
@pytest.mark.parametrize("alpha", [0.3, 1.0, 10.0])
def test_held_out_scorer_equals_fitting_the_model(encoder, split, labelling, alpha):
    pool, held_out = split
    x_pool, x_out = encoder.transform(pool), encoder.transform(held_out)
    out_labels = [c.reference_label for c in held_out]
    labels = labellings(pool)[labelling]
    model = ProxyRewardModel(alpha=alpha).fit(x_pool, labels)
    expected = ranking_accuracy(model.predict(x_out), out_labels)
    scorer = HeldOutScorer(x_pool, x_out, out_labels, alpha=alpha)
    assert scorer.accuracy(labels) == pytest.approx(expected, abs=1e-9)


def test_swapping_a_and_b_flips_the_margins(encoder, comparisons):
    x = encoder.transform(comparisons)
    model = ProxyRewardModel().fit(x, [c.first_human for c in comparisons])
    margins = model.predict(x)
    assert np.abs(margins).max() > 0
    np.testing.assert_allclose(
        model.predict(encoder.transform([swapped(c) for c in comparisons])), -margins
    )


def test_fitting_on_swapped_pairs_with_flipped_labels_learns_the_same_model(encoder, comparisons):
    labels = [c.first_human for c in comparisons]
    model = ProxyRewardModel().fit(encoder.transform(comparisons), labels)
    mirror = ProxyRewardModel().fit(
        encoder.transform([swapped(c) for c in comparisons]), [FLIP[label] for label in labels]
    )
    np.testing.assert_allclose(mirror.coef_, model.coef_, atol=1e-6)


def test_identical_responses_encode_to_zero(encoder):
    same = Comparison(id="s", prompt="p", response_a="same words", response_b="same words")
    assert encoder.transform([same]).nnz == 0


def keyword_pairs(n: int, offset: int = 0) -> tuple[list[Comparison], list[Label]]:
    """Pairs where the preferred response says "excellent" and the other "terrible"."""
    pairs, labels = [], []
    for i in range(offset, offset + n):
        good, bad = f"an excellent answer number {i}", f"a terrible answer number {i}"
        a_wins = i % 2 == 0
        pairs.append(
            Comparison(
                id=str(i),
                prompt="p",
                response_a=good if a_wins else bad,
                response_b=bad if a_wins else good,
            )
        )
        labels.append(Label.A if a_wins else Label.B)
    return pairs, labels


def test_proxy_model_learns_a_word_that_marks_the_better_response(encoder):
    train, train_labels = keyword_pairs(40)
    test, test_labels = keyword_pairs(20, offset=1000)
    model = ProxyRewardModel().fit(encoder.transform(train), train_labels)
    assert ranking_accuracy(model.predict(encoder.transform(test)), test_labels) == 1.0
    inverted = ProxyRewardModel().fit(encoder.transform(train), [FLIP[x] for x in train_labels])
    assert ranking_accuracy(inverted.predict(encoder.transform(test)), test_labels) == 0.0


def test_preference_targets():
    np.testing.assert_array_equal(
        preference_targets([Label.A, Label.B, Label.TIE, None]), [1.0, -1.0, 0.0, 0.0]
    )


def test_ranking_accuracy_scores_decisive_labels_and_half_credit_for_zero_margins():
    margins = np.array([1.0, -1.0, 0.0, 5.0, -3.0])
    labels = [Label.A, Label.A, Label.B, Label.TIE, None]
    # decisive: +1 right, -1 wrong, 0 half -> (1 + 0 + 0.5) / 3
    assert ranking_accuracy(margins, labels) == pytest.approx(0.5)
    assert ranking_accuracy(np.array([2.0, -2.0]), [Label.A, Label.B]) == 1.0


def test_ranking_accuracy_needs_a_decisive_label():
    with pytest.raises(ValueError, match="no decisive"):
        ranking_accuracy(np.array([1.0, 2.0]), [Label.TIE, None])
