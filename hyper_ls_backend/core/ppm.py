"""HyPER's performance prediction model (PPM): how good a reward model does a label mix make?

A *mix* is the set of comparisons routed to humans; every other comparison keeps the
judge's label. A mix is represented by how many human-routed comparisons carry each
feature. We divide those counts by the pool size (the paper uses raw counts), so one fitted
PPM applies to campaigns of any size.

Training data for the PPM are sampled mixes (the paper's shuffled-feature knapsack at
random budgets, random subsets, all-human and all-judge), each scored by training a proxy
reward model on its labels (``PROXY_RMS``: today's ridge, Bradley-Terry or the General
Preference Model) and measuring it on held-out human labels.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.preprocessing import PolynomialFeatures

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.preference import PreferenceEncoder, make_preference_model
from hyper_ls_backend.core.proxy_rm import HeldOutScorer, PairEncoder, ranking_accuracy

RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def hybrid_labels(comparisons: Sequence[Comparison], to_human: np.ndarray) -> list[Label | None]:
    """The labels a campaign ends with: the first human vote where routed, else the judge's.

    A comparison whose judge failed keeps its human label: the router always sends those.
    """
    return [
        c.first_human if (human or c.judge_label is None) else c.judge_label
        for c, human in zip(comparisons, to_human, strict=True)
    ]


def knapsack_mix(features: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffle the feature columns; add each feature's comparisons until the budget is full."""
    n = features.shape[0]
    chosen = np.zeros(n, dtype=bool)
    for column in rng.permutation(features.shape[1]):
        remaining = budget - int(chosen.sum())
        if remaining <= 0:
            break
        candidates = np.flatnonzero((features[:, column] > 0) & ~chosen)
        if len(candidates) > remaining:
            candidates = rng.choice(candidates, size=remaining, replace=False)
        chosen[candidates] = True
    return chosen


def random_mix(n: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.choice(n, size=budget, replace=False)] = True
    return chosen


def sample_mixes(features: np.ndarray, n_mixes: int, rng: np.random.Generator) -> np.ndarray:
    """``n_mixes`` boolean rows (True = human): all-human, all-judge, then knapsack and
    random mixes in equal numbers at uniformly random budgets."""
    n = features.shape[0]
    mixes = [np.ones(n, dtype=bool), np.zeros(n, dtype=bool)]
    while len(mixes) < n_mixes:
        budget = int(rng.integers(1, n))
        sampler = knapsack_mix if len(mixes) % 2 == 0 else None
        mixes.append(sampler(features, budget, rng) if sampler else random_mix(n, budget, rng))
    return np.vstack(mixes[:n_mixes])


def mix_vectors(features: np.ndarray, mixes: np.ndarray) -> np.ndarray:
    """Share of the pool that is human-routed and carries each feature, one row per mix."""
    return (mixes.astype(np.float32) @ features) / features.shape[0]


PROXY_RMS = ("ridge", "bradley-terry", "gpm")
"""Proxy reward models a mix can be scored with: ``ridge`` (``proxy_rm.py``, scored by one
matrix-vector product per mix) or a preference model (``preference.py``, fitted per mix)."""
WARM_MAX_ITER = 30
"""L-BFGS iterations per mix for a preference model, started from its all-judge fit (a mix
changes only the human-routed labels)."""


class MixScorer:
    """Scores a mix by the held-out accuracy of a proxy reward model trained on its labels."""

    def __init__(
        self,
        pool: Sequence[Comparison],
        held_out: Sequence[Comparison],
        encoder: PairEncoder | None = None,
        proxy_rm: str = "ridge",
    ) -> None:
        if proxy_rm not in PROXY_RMS:
            raise ValueError(
                f"unknown proxy reward model {proxy_rm!r} (choose from: {', '.join(PROXY_RMS)})"
            )
        self.pool = list(pool)
        self._held_out_labels = [c.reference_label for c in held_out]
        if proxy_rm == "ridge":
            encoder = encoder or PairEncoder()
            self._scorer = HeldOutScorer(
                encoder.transform(self.pool), encoder.transform(held_out), self._held_out_labels
            )
            return
        self._scorer = None
        preference_encoder = PreferenceEncoder()
        self._pairs = preference_encoder.transform(self.pool)
        self._held_out = preference_encoder.transform(held_out)
        self._base = make_preference_model(proxy_rm).fit(
            self._pairs, hybrid_labels(self.pool, np.zeros(len(self.pool), dtype=bool))
        )

    def score(self, to_human: np.ndarray) -> float:
        labels = hybrid_labels(self.pool, to_human)
        if self._scorer is not None:
            return self._scorer.accuracy(labels)
        model = copy.deepcopy(self._base).set_params(warm_start=True, max_iter=WARM_MAX_ITER)
        margins = model.fit(self._pairs, labels).margin(self._held_out)
        return ranking_accuracy(margins, self._held_out_labels)


class PerformancePredictionModel:
    """Predicts a mix's proxy reward-model accuracy from its feature shares.

    ``degree=1`` is the paper's linear PPM, ``degree=2`` its quadratic one (the paper's
    best). Ridge with a cross-validated penalty stands in for plain least squares: we have
    a few hundred mixes and, at degree 2, thousands of columns.
    """

    def __init__(self, degree: int = 2) -> None:
        self.degree = degree

    def fit(self, vectors: np.ndarray, targets: np.ndarray) -> PerformancePredictionModel:
        ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(self._expand(vectors), targets)
        self.coef_ = ridge.coef_
        self.intercept_ = float(ridge.intercept_)
        self.alpha_ = float(ridge.alpha_)
        return self

    def _expand(self, vectors: np.ndarray) -> np.ndarray:
        if self.degree == 1:
            return vectors
        # Degree-1 columns come first, so coef_[:n_features] are the linear terms.
        return PolynomialFeatures(self.degree, include_bias=False).fit_transform(vectors)

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        return self._expand(vectors) @ self.coef_ + self.intercept_

    def linear_terms(self, n_features: int) -> np.ndarray:
        """First-order coefficient of each feature (per unit of pool share): the paper's
        top-k gain, PPM(this comparison alone to humans) - PPM(nobody), times the pool size,
        in the large-pool limit."""
        return self.coef_[:n_features]

    def to_dict(self) -> dict:
        return {
            "degree": self.degree,
            "alpha": self.alpha_,
            "intercept": self.intercept_,
            "coef": [round(float(c), 6) for c in self.coef_],
        }

    @classmethod
    def from_dict(cls, data: dict) -> PerformancePredictionModel:
        model = cls(degree=data["degree"])
        model.coef_ = np.asarray(data["coef"], dtype=float)
        model.intercept_ = float(data["intercept"])
        model.alpha_ = float(data["alpha"])
        return model


@dataclass(frozen=True)
class PPMQuality:
    """Cross-validated quality of a PPM, as the paper's Table 2 reports it."""

    degree: int
    spearman: float
    rmse: float
    n_mixes: int


def cross_validate_ppm(
    vectors: np.ndarray,
    targets: np.ndarray,
    degree: int,
    blocks: np.ndarray | None = None,
    folds: int = 10,
    seed: int = 0,
) -> PPMQuality:
    """K-fold CV over mixes, as the paper's Table 2, run within each block of mixes that
    share a pool/held-out split (across blocks, the split's own level would inflate the
    rank correlation); Spearman and RMSE are averaged over blocks."""
    blocks = np.zeros(len(targets), dtype=int) if blocks is None else blocks
    spearmans, rmses = [], []
    for block in np.unique(blocks):
        x, y = vectors[blocks == block], targets[blocks == block]
        predictions = np.empty_like(y, dtype=float)
        for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
            model = PerformancePredictionModel(degree).fit(x[train], y[train])
            predictions[test] = model.predict(x[test])
        spearmans.append(spearmanr(predictions, y).statistic)
        rmses.append(np.sqrt(np.mean((predictions - y) ** 2)))
    return PPMQuality(degree, float(np.mean(spearmans)), float(np.mean(rmses)), len(targets))
