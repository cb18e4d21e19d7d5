"""A reward model cheap enough to train hundreds of times on a CPU.

HyPER scores a candidate label mix by training a reward model on it and measuring that
model. The paper trains a full LM reward model per mix; we fit a linear reward over hashed
bag-of-words features of each response (plus a few shape features) to the pair labels by
ridge least squares, and score how often it orders held-out human labels correctly. It is
a proxy: it tells which label mixes teach more, not how good a real reward model would be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import Ridge

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.text import has_code, has_list

HASH_FEATURES = 2**14


class PairEncoder:
    """Encodes each comparison as phi(prompt, response_a) - phi(prompt, response_b)."""

    def __init__(self, n_features: int = HASH_FEATURES) -> None:
        self.n_features = n_features
        self._vectorizer = HashingVectorizer(
            n_features=n_features, alternate_sign=False, ngram_range=(1, 2), norm="l2"
        )

    def _shape(self, texts: Sequence[str]) -> sparse.csr_matrix:
        rows = [
            [math.log1p(len(t.split())) / 10, float(has_code(t)), float(has_list(t))] for t in texts
        ]
        return sparse.csr_matrix(np.asarray(rows, dtype=np.float64).reshape(len(texts), 3))

    def _phi(self, texts: Sequence[str]) -> sparse.csr_matrix:
        return sparse.hstack([self._vectorizer.transform(texts), self._shape(texts)]).tocsr()

    def sides(
        self, comparisons: Sequence[Comparison]
    ) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        """phi of each side's response, for models that compare more than a difference."""
        return (
            self._phi([c.response_a for c in comparisons]),
            self._phi([c.response_b for c in comparisons]),
        )

    def transform(self, comparisons: Sequence[Comparison]) -> sparse.csr_matrix:
        phi_a, phi_b = self.sides(comparisons)
        return phi_a - phi_b


PREFERENCE_TARGET = {Label.A: 1.0, Label.B: -1.0, Label.TIE: 0.0}


def preference_targets(labels: Sequence[Label | None]) -> np.ndarray:
    """+1 when A is preferred, -1 for B, 0 for a tie or no label (no preference)."""
    return np.array([PREFERENCE_TARGET.get(label, 0.0) for label in labels])


class ProxyRewardModel:
    """A linear reward model fitted by ridge least squares on pair differences.

    reward(prompt, response) = w . phi(prompt, response); a pair's target is +1/-1/0 for
    A/B/tie. Without intercept the model is order-blind (swapping A and B flips the sign).
    Least squares rather than logistic loss so ``HeldOutScorer`` can precompute the map
    from training labels to held-out predictions and score a mix with one product.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(
        self, differences: sparse.csr_matrix, labels: Sequence[Label | None]
    ) -> ProxyRewardModel:
        ridge = Ridge(alpha=self.alpha, fit_intercept=False)
        self.coef_ = ridge.fit(differences, preference_targets(labels)).coef_
        return self

    def predict(self, differences: sparse.csr_matrix) -> np.ndarray:
        """Reward of A minus reward of B: positive means A is preferred."""
        return differences @ self.coef_


def ranking_accuracy(margins: np.ndarray, labels: Sequence[Label | None]) -> float:
    """Share of decisive (A/B) labels the margins order correctly; a zero margin counts half."""
    targets = preference_targets(labels)
    decisive = targets != 0
    if not decisive.any():
        raise ValueError("no decisive (A/B) labels to score the reward model on")
    agreement = np.sign(margins[decisive]) * targets[decisive]
    return float(np.mean((agreement + 1) / 2))


class HeldOutScorer:
    """Held-out accuracy of a ``ProxyRewardModel`` trained on any labelling of a fixed pool.

    The ridge solution is linear in the training targets, so held-out margins are
    ``H @ targets`` with ``H = X_out X_pool^T (X_pool X_pool^T + alpha I)^-1`` computed once:
    scoring a mix costs one matrix-vector product instead of a model fit.
    """

    def __init__(
        self,
        pool_differences: sparse.csr_matrix,
        held_out_differences: sparse.csr_matrix,
        held_out_labels: Sequence[Label | None],
        alpha: float = 1.0,
    ) -> None:
        gram = (pool_differences @ pool_differences.T).toarray()
        cross = (held_out_differences @ pool_differences.T).toarray()
        gram[np.diag_indices_from(gram)] += alpha
        self._operator = np.linalg.solve(gram, cross.T).T
        self._held_out_labels = list(held_out_labels)

    def accuracy(self, pool_labels: Sequence[Label | None]) -> float:
        margins = self._operator @ preference_targets(pool_labels)
        return ranking_accuracy(margins, self._held_out_labels)
