"""A quality target with a guarantee: the judge labels only what a human-labelled
calibration sample certifies.

"AI labels agree with a human at least ``target_agreement`` of the time, with confidence
``confidence``", after Trust or Escalate (Jung, Brahman and Choi, ICLR 2025). The router's
score orders comparisons by how likely the judge is wrong; the judge may label those scoring
at most a threshold ``λ``. The threshold is chosen by **fixed-sequence testing** on the
calibration comparisons (each with its judge label and one human label): thresholds are
tested from the strictest that could pass to the loosest, each testing the null hypothesis
"the agreement of comparisons scoring at most ``λ`` is below the target" with the exact
binomial test on the calibration comparisons under ``λ``; testing stops at the first that
fails, and the loosest passed is kept. Fixed-sequence testing spends ``δ = 1 - confidence``
once, however many thresholds it tries (Bauer 1991), so

    P( agreement(λ̂) >= target_agreement ) >= confidence

over the draw of the calibration sample, where ``agreement(λ)`` is the chance that a new
comparison scoring at most ``λ`` gets a judge label a single human agrees with.

**Assumption.** The calibration comparisons and the routed ones are exchangeable: drawn
alike from one population, scored by one fixed router, judged by one judge. A drift in the
data, another judge or prompt, or a router refitted after the calibration labels were drawn
breaks it (re-certify on a fresh sample; see docs/guarantee.md).

**Weights.** Audits drawn with unequal inclusion probabilities weigh ``1 / probability``.
The test then uses the weighted error share on Kish's effective sample size
``(Σw)² / Σw²`` in the same binomial tail (continuous in the count); with equal weights that
is the exact test, otherwise an approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import betainc
from scipy.stats import beta


@dataclass(frozen=True)
class ThresholdTest:
    """One threshold and what the calibration sample says of it."""

    threshold: float
    """The judge may label comparisons scoring at most this."""
    n: int
    """Calibration comparisons scoring at most ``threshold``."""
    coverage: float
    """Their share of the calibration sample: the share the judge would label."""
    agreement: float
    """Their (weighted) share where the judge's label agrees with the human's."""
    lower_bound: float
    """One-sided Clopper-Pearson bound: agreement is at least this with the confidence."""
    p_value: float
    """Of the null "agreement below the target" (exact binomial with equal weights)."""
    passed: bool


class AgreementGuarantee:
    """Chooses the loosest score threshold that certifies a target agreement.

    Parameters
    ----------
    target_agreement:
        ``1 - alpha``: the least share of AI labels a single human would agree with.
    confidence:
        ``1 - delta``: the chance, over the calibration draw, that the target holds.
    n_thresholds:
        Thresholds tried, at evenly spaced calibration positions from the first (below) to
        all of them. Fewer, coarser steps stop less often on a local dip; more give a finer
        threshold.
    start_share:
        The first threshold tried takes this share of the calibration sample (at least
        ``min_calibration``): testing stops at the first failure, so the first test must
        have the power to pass. A choice made before seeing any label, as the method needs.

    The defaults (10 thresholds from a quarter of the sample) certified the largest shares
    among the settings tried on the development sets (docs/guarantee.md); the guarantee
    holds for any setting, only the share the judge gets depends on it.
    """

    def __init__(
        self,
        target_agreement: float = 0.85,
        confidence: float = 0.9,
        n_thresholds: int = 10,
        start_share: float = 0.25,
    ) -> None:
        self.target_agreement = target_agreement
        self.confidence = confidence
        self.n_thresholds = n_thresholds
        self.start_share = start_share

    @property
    def min_calibration(self) -> int:
        """The fewest comparisons under a threshold that can certify it (all agreeing)."""
        alpha, delta = 1.0 - self.target_agreement, 1.0 - self.confidence
        return math.ceil(math.log(delta) / math.log(1.0 - alpha))

    def fit(
        self,
        scores: Sequence[float] | np.ndarray,
        agree: Sequence[bool] | np.ndarray,
        weights: Sequence[float] | np.ndarray | None = None,
    ) -> AgreementGuarantee:
        """Test thresholds on calibration comparisons: their router ``scores``, whether the
        judge's label ``agree``\\ s with one human label, and optional ``weights``
        (``1 / inclusion probability``)."""
        for name in ("target_agreement", "confidence"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be strictly between 0 and 1")
        scores, agree = np.asarray(scores, dtype=float), np.asarray(agree, dtype=float)
        weights = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=float)
        if not len(scores) == len(agree) == len(weights):
            raise ValueError("scores, agree and weights must have one value per comparison")
        if np.any(weights <= 0):
            raise ValueError("weights must be positive (1 / inclusion probability)")
        self.n_calibration_ = len(scores)
        self.curve_ = self._curve(scores, agree, weights)
        self.tests_: list[ThresholdTest] = []
        for test in self.curve_:
            self.tests_.append(test)
            if not test.passed:
                break
        passed = [test for test in self.tests_ if test.passed]
        self.certified_: ThresholdTest | None = passed[-1] if passed else None
        self.threshold_: float | None = self.certified_.threshold if passed else None
        return self

    @property
    def certificate_(self) -> Certificate | None:
        """What the policy needs to route by the certified threshold (None if none)."""
        if self.certified_ is None:
            return None
        return Certificate(
            threshold=self.certified_.threshold,
            target_agreement=self.target_agreement,
            confidence=self.confidence,
            n_calibration=self.n_calibration_,
            lower_bound=self.certified_.lower_bound,
        )

    def allows(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """Which comparisons the judge may label: those scoring at most the threshold
        (none when nothing was certified)."""
        scores = np.asarray(scores, dtype=float)
        if self.threshold_ is None:
            return np.zeros(len(scores), dtype=bool)
        return scores <= self.threshold_

    def why_not(self) -> str:
        """Why nothing was certified, in words (empty when something was)."""
        if self.certified_ is not None:
            return ""
        target = f"agreement {self.target_agreement:.0%} at {self.confidence:.0%} confidence"
        if self.n_calibration_ < self.min_calibration:
            return (
                f"{self.n_calibration_} calibration comparisons cannot certify {target}: it "
                f"takes at least {self.min_calibration}, all agreeing"
            )
        first = self.tests_[0]
        return (
            f"no threshold certifies {target}: the {first.n} comparisons the router trusts "
            f"most agree {first.agreement:.1%} of the time (certified at least "
            f"{first.lower_bound:.1%})"
        )

    def _curve(self, scores: np.ndarray, agree: np.ndarray, weights: np.ndarray) -> list:
        """Every threshold in testing order (strictest first), each tested."""
        n = len(scores)
        if n < self.min_calibration:
            return []
        order = np.argsort(scores, kind="stable")
        sorted_scores = scores[order]
        w, wa = np.cumsum(weights[order]), np.cumsum((weights * agree)[order])
        w2 = np.cumsum((weights**2)[order])
        first = max(self.min_calibration, math.ceil(self.start_share * n))
        # evenly spaced down from all of them, so one threshold is all of them
        positions = np.unique(
            np.linspace(n, min(first, n), num=max(1, self.n_thresholds)).round()
        ).astype(int)
        alpha, delta = 1.0 - self.target_agreement, 1.0 - self.confidence
        curve, seen = [], set()
        for position in positions:
            threshold = float(sorted_scores[position - 1])
            # every comparison scoring the same as the cut is under the threshold too
            last = int(np.searchsorted(sorted_scores, threshold, side="right"))
            if last in seen:
                continue
            seen.add(last)
            share = wa[last - 1] / w[last - 1]
            n_eff = w[last - 1] ** 2 / w2[last - 1]
            agreeing = share * n_eff
            p_value = _binomial_tail(n_eff - agreeing, n_eff, alpha)
            curve.append(
                ThresholdTest(
                    threshold=threshold,
                    n=last,
                    coverage=last / n,
                    agreement=float(share),
                    lower_bound=_clopper_pearson_lower(agreeing, n_eff, delta),
                    p_value=p_value,
                    passed=p_value <= delta,
                )
            )
        return curve


def _binomial_tail(errors: float, n: float, alpha: float) -> float:
    """P(Binomial(n, alpha) <= errors), continuous in ``errors`` and ``n``: the p-value of
    "the error rate is at least alpha" having seen ``errors`` in ``n``."""
    if errors >= n:
        return 1.0
    return float(betainc(n - errors, errors + 1.0, 1.0 - alpha))


def _clopper_pearson_lower(successes: float, n: float, delta: float) -> float:
    """The one-sided ``1 - delta`` Clopper-Pearson lower bound of a success rate."""
    if successes <= 0:
        return 0.0
    return float(beta.ppf(delta, successes, n - successes + 1.0))


def naive_threshold(
    scores: Sequence[float] | np.ndarray, agree: Sequence[bool] | np.ndarray, target: float
) -> float | None:
    """The baseline without a bound: the loosest threshold at which the calibration
    comparisons under it agree at least ``target`` of the time (None if none does)."""
    scores, agree = np.asarray(scores, dtype=float), np.asarray(agree, dtype=float)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    running = np.cumsum(agree[order]) / np.arange(1, len(scores) + 1)
    # only cut between distinct scores: a threshold takes every comparison scoring the same
    cuts = np.flatnonzero(np.append(sorted_scores[1:] > sorted_scores[:-1], True))
    good = cuts[running[cuts] >= target]
    return float(sorted_scores[good[-1]]) if len(good) else None


@dataclass(frozen=True)
class Certificate:
    """A certified threshold, as the campaign policy applies it and reports it."""

    threshold: float
    target_agreement: float
    confidence: float
    n_calibration: int
    lower_bound: float
    """The calibration's one-sided bound on the agreement under the threshold."""

    def describe(self) -> str:
        return (
            f"agreement >= {self.target_agreement:.0%} at {self.confidence:.0%} confidence "
            f"(threshold {self.threshold:.3f}, {self.n_calibration} calibration comparisons)"
        )
