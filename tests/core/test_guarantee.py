"""The risk-controlled threshold: exact binomial values on small cases, the fixed sequence,
weights, and the baseline without a bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from hyper_ls_backend.core.guarantee import AgreementGuarantee, naive_threshold


def test_the_fewest_comparisons_that_can_certify():
    # 0.8 ** 11 = 0.086 <= 0.1 < 0.8 ** 10 = 0.107
    assert AgreementGuarantee(0.8, 0.9).min_calibration == 11
    assert AgreementGuarantee(0.9, 0.9).min_calibration == 22


def test_eleven_agreeing_certify_80_percent_and_ten_do_not():
    eleven = AgreementGuarantee(0.8, 0.9, n_thresholds=1).fit(np.arange(11.0), np.ones(11))
    assert eleven.tests_[0].n == 11
    assert eleven.threshold_ == 10.0
    (test,) = eleven.tests_
    assert test.p_value == pytest.approx(0.8**11)
    assert test.lower_bound == pytest.approx(0.1 ** (1 / 11))  # Clopper-Pearson, none wrong
    ten = AgreementGuarantee(0.8, 0.9).fit(np.arange(10.0), np.ones(10))
    assert ten.threshold_ is None and ten.tests_ == []
    assert "at least 11, all agreeing" in ten.why_not()


def test_the_p_value_is_the_exact_binomial_tail():
    agree = np.ones(20)
    agree[[3, 17]] = 0  # two wrong of 20
    guarantee = AgreementGuarantee(0.8, 0.9, n_thresholds=1).fit(np.arange(20.0), agree)
    (test,) = guarantee.tests_
    assert test.n == 20 and test.agreement == 0.9
    assert test.p_value == pytest.approx(binom.cdf(2, 20, 0.2))  # 0.206: not certified
    assert not test.passed and guarantee.threshold_ is None
    assert "agree 90.0% of the time" in guarantee.why_not()


def test_testing_stops_at_the_first_threshold_that_fails():
    """A run of errors in the middle stops the sequence even though looser thresholds,
    diluting it, would pass on their own: fixed-sequence testing never looks past it."""
    agree = np.ones(200)
    agree[40:52] = 0
    guarantee = AgreementGuarantee(0.8, 0.9, n_thresholds=200, start_share=0).fit(
        np.arange(200.0), agree
    )
    assert guarantee.tests_[-1].passed is False
    assert any(t.passed for t in guarantee.curve_[len(guarantee.tests_) :])
    assert guarantee.threshold_ == guarantee.tests_[-2].threshold < 52


def test_the_loosest_passing_threshold_is_kept_and_allows_what_scores_under_it():
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=2_000)
    agree = rng.uniform(size=2_000) > scores * 0.5  # agreement falls as the score rises
    guarantee = AgreementGuarantee(0.85, 0.9).fit(scores, agree)
    threshold = guarantee.threshold_
    assert threshold is not None
    under = scores <= threshold
    assert agree[under].mean() >= 0.85
    assert np.array_equal(guarantee.allows(scores), under)
    certificate = guarantee.certificate_
    assert certificate.threshold == threshold and certificate.lower_bound >= 0.85


def test_comparisons_scoring_the_same_as_the_cut_are_all_under_the_threshold():
    scores = np.array([0.1] * 30 + [0.5] * 30)
    guarantee = AgreementGuarantee(0.8, 0.9, n_thresholds=60, start_share=0).fit(
        scores, np.ones(60)
    )
    assert [t.n for t in guarantee.curve_] == [30, 60]


def test_equal_weights_are_the_unweighted_test_and_heavy_errors_weigh_more():
    agree = np.ones(40)
    agree[[5, 25]] = 0
    scores = np.arange(40.0)
    plain = AgreementGuarantee(0.8, 0.9, n_thresholds=1).fit(scores, agree)
    doubled = AgreementGuarantee(0.8, 0.9, n_thresholds=1).fit(scores, agree, np.full(40, 2.0))
    assert doubled.tests_ == plain.tests_
    weights = np.ones(40)
    weights[[5, 25]] = 4.0  # the two errors were drawn with a quarter of the probability
    heavy = AgreementGuarantee(0.8, 0.9, n_thresholds=1).fit(scores, agree, weights)
    (test,) = heavy.tests_
    assert test.agreement == pytest.approx(38 / 46)
    assert test.p_value > plain.tests_[0].p_value


@pytest.mark.parametrize(("target", "confidence"), [(0.0, 0.9), (0.9, 1.0), (1.5, 0.9)])
def test_targets_and_confidences_must_be_shares(target, confidence):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        AgreementGuarantee(target, confidence).fit([0.1], [1])


def test_the_guarantee_holds_at_its_confidence_over_many_draws():
    """Where the true agreement under every threshold is known: the chosen threshold's
    agreement reaches the target in at least 90% of calibration draws."""
    rng = np.random.default_rng(1)
    target, held = 0.85, 0
    for _ in range(400):
        scores = rng.uniform(size=300)
        # P(agree | score s) = 1 - 0.4 s, so agreement under threshold t is 1 - 0.2 t
        agree = rng.uniform(size=300) < 1.0 - 0.4 * scores
        threshold = AgreementGuarantee(target, 0.9).fit(scores, agree).threshold_
        true_agreement = 1.0 if threshold is None else 1.0 - 0.2 * min(threshold, 1.0)
        held += true_agreement >= target
    assert held / 400 >= 0.9 - 3 * math.sqrt(0.9 * 0.1 / 400)


def test_the_first_threshold_takes_the_start_share_of_the_sample():
    guarantee = AgreementGuarantee(0.8, 0.9, n_thresholds=4, start_share=0.25).fit(
        np.arange(400.0), np.ones(400)
    )
    assert [t.n for t in guarantee.curve_] == [100, 200, 300, 400]
    assert guarantee.threshold_ == 399.0


def test_the_naive_threshold_is_where_calibration_agreement_last_reaches_the_target():
    scores = np.arange(10.0)
    agree = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 0])
    # running agreement: 1, 1, 1, .75, .8, .83, .86, .875, .78, .7
    assert naive_threshold(scores, agree, 0.85) == 7.0
    assert naive_threshold(scores, agree, 1.0) == 2.0
    assert naive_threshold(scores, np.zeros(10), 0.5) is None


def test_calibration_counts_one_human_label_per_comparison_drawn_by_its_id():
    from hyper_ls_backend.core.calibration import agreement_with_one_human, usable
    from hyper_ls_backend.core.comparison import Comparison, JudgeVerdict, Label

    def pair(i: int, human: list[str]) -> Comparison:
        return Comparison(
            id=f"c{i}",
            prompt="p",
            response_a="a",
            response_b="b",
            human=human,
            judge=JudgeVerdict(label=Label.A),
        )

    split = [pair(i, ["A", "B"]) for i in range(400)]
    agree = agreement_with_one_human(split)
    assert set(agree) == {0.0, 1.0} and 0.4 < agree.mean() < 0.6
    assert np.array_equal(agree, agreement_with_one_human(split))  # the same draw again
    assert agreement_with_one_human([pair(0, ["A"]), pair(1, ["tie"])]).tolist() == [1.0, 0.0]
    unjudged = Comparison(id="u", prompt="p", response_a="a", response_b="b", human=["A"])
    assert usable([unjudged, pair(2, []), pair(3, ["B"])]) == [pair(3, ["B"])]
