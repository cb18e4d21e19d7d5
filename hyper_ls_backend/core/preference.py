"""Preference models: P(response A is better than response B), learned from pair labels.

One estimator interface (scikit-learn style) for a small family, on hashed n-grams of each
response (``PairEncoder``) and of the prompt, so nothing needs downloaded weights:

- ``BradleyTerry`` (``bradley-terry``): a scalar reward r(y) = w . phi(y) and
  P(a > b) = sigmoid(r(a) - r(b)), fitted by L2-penalised logistic loss. Transitive by
  construction: it cannot express a cycle (a > b > c > a).
- ``GeneralPreferenceModel`` (``gpm``; Zhang et al. 2024, "General Preference Modeling
  with Preference Representations for Aligning Language Models"): a preference embedding
  v(y) = W^T [phi(y), 1] of dimension 2k and P(a > b) = sigmoid(v(a)^T R v(b)), with R
  block-diagonal, blocks lambda_l [[0, -1], [1, 0]]. R is skew-symmetric, so the score of
  (b, a) is minus that of (a, b): P(a > b) + P(b > a) = 1 by construction, yet a cycle is
  expressible (three responses at 120 degrees in one block). The block scales lambda_l
  are k x softmax of a learned bias per block, or, with ``gate=True``, of a linear map of
  the prompt's n-grams (which preference dimensions matter depends on what was asked).
  A constant coordinate lets GPM nest Bradley-Terry (v = (1, r) in one block gives
  r(a) - r(b)). The fit is not convex: it starts from a seeded draw of unit scale (a
  small draw, or a start at the Bradley-Terry solution, stays near the saddle at zero and
  memorises the training pairs instead of finding a cycle; see docs/evaluation.md).

Labels are soft targets: A -> 1, B -> 0, a tie -> 1/2 (no preference either way), no
label -> not used. Neither model has an intercept: both are blind to the order the two
responses are shown in.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from scipy import sparse
from scipy.optimize import minimize
from scipy.special import expit, log_expit, softmax
from sklearn.feature_extraction.text import HashingVectorizer
from threadpoolctl import threadpool_limits

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.proxy_rm import HASH_FEATURES, PairEncoder

PROMPT_HASH_FEATURES = 2**12
PREFERENCE_TARGET = {Label.A: 1.0, Label.B: 0.0, Label.TIE: 0.5}
MAX_ITER = 500
GPM_MAX_ITER = 100
"""Enough for GPM to find the synthetic cycle (docs/evaluation.md) and fit 5,000 MT-Bench
comparisons in under 3 CPU seconds; Bradley-Terry converges in about 40."""


@dataclass(frozen=True)
class EncodedPairs:
    """Comparisons as features: each side's response and the prompt, one row per pair.

    Encode once and fit many times (the PPM fits a model per label mix on one pool)."""

    a: sparse.csr_matrix
    b: sparse.csr_matrix
    prompt: sparse.csr_matrix

    def __len__(self) -> int:
        return self.a.shape[0]

    def rows(self, index: np.ndarray) -> EncodedPairs:
        return EncodedPairs(self.a[index], self.b[index], self.prompt[index])


class PreferenceEncoder:
    """Hashed word 1-2-grams (and a few shape features) of each response and of the prompt."""

    def __init__(
        self, n_features: int = HASH_FEATURES, prompt_features: int = PROMPT_HASH_FEATURES
    ) -> None:
        self.n_features = n_features
        self.prompt_features = prompt_features
        self._responses = PairEncoder(n_features)
        self._prompts = HashingVectorizer(
            n_features=prompt_features, alternate_sign=False, ngram_range=(1, 2), norm="l2"
        )

    def transform(self, comparisons: Sequence[Comparison] | EncodedPairs) -> EncodedPairs:
        if isinstance(comparisons, EncodedPairs):
            return comparisons
        a, b = self._responses.sides(comparisons)
        prompt = self._prompts.transform([c.prompt for c in comparisons]).tocsr()
        return EncodedPairs(a, b, prompt)


def preference_probabilities(labels: Sequence[Label | None]) -> tuple[np.ndarray, np.ndarray]:
    """Soft targets (A 1, B 0, tie 1/2) and whether each row has a label at all."""
    targets = np.array([PREFERENCE_TARGET.get(label, 0.5) for label in labels])
    return targets, np.array([label in PREFERENCE_TARGET for label in labels])


def probability(margins: np.ndarray) -> np.ndarray:
    """sigmoid(margin), computed so that p(m) + p(-m) == 1 exactly in floating point:
    q = sigmoid(|m|) >= 1/2, and 1 - q is exact there (Sterbenz), so q + (1 - q) is 1."""
    q = expit(np.abs(margins))
    return np.where(margins >= 0, q, 1.0 - q)


class PreferenceModel(ABC):
    """Base class: ``fit(comparisons, labels, sample_weight)``, ``predict_proba`` = P(A > B).

    ``comparisons`` may be ``EncodedPairs`` from this model's ``encoder`` (fit and score
    many times without re-reading the texts)."""

    name: ClassVar[str]

    def __init__(
        self, alpha: float = 1.0, max_iter: int = MAX_ITER, warm_start: bool = False
    ) -> None:
        self.alpha = alpha
        self.max_iter = max_iter
        self.warm_start = warm_start

    def get_params(self) -> dict[str, Any]:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params: Any) -> Self:
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"{self.name!r} has no parameter {name!r}")
            setattr(self, name, value)
        return self

    @property
    def encoder(self) -> PreferenceEncoder:
        return PreferenceEncoder()

    def fit(
        self,
        comparisons: Sequence[Comparison] | EncodedPairs,
        labels: Sequence[Label | None],
        sample_weight: np.ndarray | None = None,
    ) -> Self:
        pairs = self.encoder.transform(comparisons)
        if len(labels) != len(pairs):
            raise ValueError(f"{len(pairs)} comparisons but {len(labels)} labels")
        targets, labelled = preference_probabilities(labels)
        weight = np.ones(len(pairs)) if sample_weight is None else np.asarray(sample_weight, float)
        weight = weight * labelled
        if not weight.any():
            raise ValueError(f"no labelled comparisons to fit {self.name!r} on")
        self._fit(pairs, targets, weight)
        return self

    @abstractmethod
    def _fit(self, pairs: EncodedPairs, targets: np.ndarray, weight: np.ndarray) -> None: ...

    @abstractmethod
    def _n_params(self) -> int | None:
        """Size of the fitted parameter vector; None before a fit."""

    def _warm(self, n_params: int) -> bool:
        """Start from the last fit (scikit-learn's ``warm_start``) when there is one of the
        same shape: refits on slightly changed labels converge in a few iterations."""
        return self.warm_start and self._n_params() == n_params

    @abstractmethod
    def margin(self, comparisons: Sequence[Comparison] | EncodedPairs) -> np.ndarray:
        """log-odds that A is better; the swapped pair gets exactly minus this."""

    def predict_proba(self, comparisons: Sequence[Comparison] | EncodedPairs) -> np.ndarray:
        """P(A is better than B), one per comparison."""
        return probability(self.margin(comparisons))


Forward = Callable[[np.ndarray], tuple[np.ndarray, float, Callable[[np.ndarray], np.ndarray]]]
"""theta -> (margins, penalty, backward): backward maps d loss / d margin per row to the
gradient of loss + penalty in theta."""


def minimize_logistic(
    forward: Forward,
    start: np.ndarray,
    targets: np.ndarray,
    weight: np.ndarray,
    max_iter: int,
) -> np.ndarray:
    """L-BFGS on ``sum weight * cross-entropy(targets, sigmoid(margin(theta))) + penalty``."""

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        margins, penalty, backward = forward(theta)
        loss = -weight @ (targets * log_expit(margins) + (1 - targets) * log_expit(-margins))
        return float(loss + penalty), backward(weight * (expit(margins) - targets))

    # The optimiser's vector updates are small: BLAS threads only contend (10x slower
    # on a loaded 2-core machine).
    with threadpool_limits(1, user_api="blas"):
        result = minimize(
            objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter}
        )
    return result.x


class BradleyTerry(PreferenceModel):
    """P(a > b) = sigmoid(w . (phi(a) - phi(b))), L2 penalty ``alpha / 2 |w|^2``."""

    name = "bradley-terry"

    def _fit(self, pairs: EncodedPairs, targets: np.ndarray, weight: np.ndarray) -> None:
        differences = (pairs.a - pairs.b).tocsr()

        def forward(w: np.ndarray):
            return (
                differences @ w,
                0.5 * self.alpha * w @ w,
                lambda residual: differences.T @ residual + self.alpha * w,
            )

        start = self.coef_ if self._warm(differences.shape[1]) else np.zeros(differences.shape[1])
        self.coef_ = minimize_logistic(forward, start, targets, weight, self.max_iter)

    def margin(self, comparisons: Sequence[Comparison] | EncodedPairs) -> np.ndarray:
        pairs = self.encoder.transform(comparisons)
        return pairs.a @ self.coef_ - pairs.b @ self.coef_

    def _n_params(self) -> int | None:
        return len(self.coef_) if hasattr(self, "coef_") else None


def with_constant(features: sparse.csr_matrix) -> sparse.csr_matrix:
    return sparse.hstack([features, np.ones((features.shape[0], 1))]).tocsr()


def block_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per 2-block l: a_{2l+1} b_{2l} - a_{2l} b_{2l+1} (= a_l^T [[0,-1],[1,0]] b_l); exactly
    antisymmetric in (a, b) in floating point."""
    return a[:, 1::2] * b[:, 0::2] - a[:, 0::2] * b[:, 1::2]


class GeneralPreferenceModel(PreferenceModel):
    """The General Preference Model over hashed n-grams (see the module docstring).

    Parameters
    ----------
    k:
        Number of 2-dimensional blocks (the embedding has dimension 2k).
    alpha:
        L2 penalty on the embedding map and on the scales' softmax logits (gate and bias).
    gate:
        Block scales from the prompt instead of one learned bias per block.
    seed:
        The draw the embedding map starts from.
    init_scale:
        Standard deviation of that draw.
    max_iter:
        L-BFGS iterations at most.
    warm_start:
        Start from the previous fit's solution, as scikit-learn's ``warm_start``.
    """

    name = "gpm"

    def __init__(
        self,
        k: int = 4,
        alpha: float = 1.0,
        gate: bool = False,
        seed: int = 0,
        init_scale: float = 1.0,
        max_iter: int = GPM_MAX_ITER,
        warm_start: bool = False,
    ) -> None:
        super().__init__(alpha, max_iter, warm_start)
        self.k = k
        self.gate = gate
        self.seed = seed
        self.init_scale = init_scale

    def _fit(self, pairs: EncodedPairs, targets: np.ndarray, weight: np.ndarray) -> None:
        phi_a, phi_b = with_constant(pairs.a), with_constant(pairs.b)
        d, k = phi_a.shape[1], self.k
        n_gate = pairs.prompt.shape[1] * k if self.gate else 0
        if self._warm(d * 2 * k + n_gate + k):
            start = np.concatenate([self.embedding_.ravel(), self.scale_params_])
        else:
            embedding = np.random.default_rng(self.seed).normal(0.0, self.init_scale, (d, 2 * k))
            start = np.concatenate([embedding.ravel(), np.zeros(n_gate + k)])

        def forward(theta: np.ndarray):
            w = theta[: d * 2 * k].reshape(d, 2 * k)
            va, vb = phi_a @ w, phi_b @ w
            cross = block_cross(va, vb)
            scales, backward_scales = self._scales(theta[d * 2 * k :], pairs.prompt)
            penalty = 0.5 * self.alpha * theta @ theta

            def backward(residual: np.ndarray) -> np.ndarray:
                # d margin/d va, block l: (-s b_{2l+1}, s b_{2l}); d vb: (s a_{2l+1}, -s a_{2l})
                rs = residual[:, None] * scales
                grad_a = np.empty_like(va)
                grad_a[:, 0::2], grad_a[:, 1::2] = -rs * vb[:, 1::2], rs * vb[:, 0::2]
                grad_b = np.empty_like(vb)
                grad_b[:, 0::2], grad_b[:, 1::2] = rs * va[:, 1::2], -rs * va[:, 0::2]
                grad_w = phi_a.T @ grad_a + phi_b.T @ grad_b
                grad_scale = backward_scales(residual[:, None] * cross)
                return np.concatenate([grad_w.ravel(), grad_scale]) + self.alpha * theta

            return (cross * scales).sum(axis=1), penalty, backward

        theta = minimize_logistic(forward, start, targets, weight, self.max_iter)
        self.embedding_ = theta[: d * 2 * k].reshape(d, 2 * k)
        self.scale_params_ = theta[d * 2 * k :]

    def _scales(self, params: np.ndarray, prompt: sparse.csr_matrix):
        """Block scales per row (n x k), k x softmax(prompt @ gate + bias): they sum to k, so
        the scales cannot grow in place of the penalised embedding (a free scale per block
        lets a fit memorise its pairs at no cost). Also the map from d loss / d scale to
        d loss / d params."""
        k = self.k
        bias = params[-k:]
        logits = np.broadcast_to(bias, (prompt.shape[0], k))
        if self.gate:
            gate = params[:-k].reshape(prompt.shape[1], k)
            logits = prompt @ gate + bias
        p = softmax(logits, axis=1)

        def backward(g: np.ndarray) -> np.ndarray:
            dz = k * p * (g - (g * p).sum(axis=1, keepdims=True))
            gate_grad = (prompt.T @ dz).ravel() if self.gate else np.zeros(0)
            return np.concatenate([gate_grad, dz.sum(axis=0)])

        return k * p, backward

    def _n_params(self) -> int | None:
        if not hasattr(self, "embedding_"):
            return None
        return self.embedding_.size + self.scale_params_.size

    def embed(self, features: sparse.csr_matrix) -> np.ndarray:
        """Preference embeddings v(y) (n x 2k) of encoded responses."""
        return with_constant(features) @ self.embedding_

    def margin(self, comparisons: Sequence[Comparison] | EncodedPairs) -> np.ndarray:
        pairs = self.encoder.transform(comparisons)
        scales, _ = self._scales(self.scale_params_, pairs.prompt)
        return (block_cross(self.embed(pairs.a), self.embed(pairs.b)) * scales).sum(axis=1)


PREFERENCE_MODELS: dict[str, type[PreferenceModel]] = {
    cls.name: cls for cls in (BradleyTerry, GeneralPreferenceModel)
}


def make_preference_model(name: str, **params: Any) -> PreferenceModel:
    try:
        return PREFERENCE_MODELS[name](**params)
    except KeyError:
        raise ValueError(
            f"unknown preference model {name!r} (choose from: {', '.join(PREFERENCE_MODELS)})"
        ) from None
