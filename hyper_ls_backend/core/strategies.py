"""Routing strategies: each scores comparisons by how much a human label is worth there.

A strategy is a small scikit-learn-style estimator over the featurizer's 0/1 matrix:
``fit(features, comparisons)`` learns, ``score(features, comparisons)`` answers (higher =
send to a human first), ``contributions(features)`` says which features moved each score.
``STRATEGIES`` maps the names users pass on the command line to classes.
"""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar, NamedTuple

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.ppm import (
    MixScorer,
    PerformancePredictionModel,
    cross_validate_ppm,
    knapsack_mix,
    mix_vectors,
    random_mix,
    sample_mixes,
)


def stable_uniform(ids: Sequence[str], seed: int) -> np.ndarray:
    """A uniform draw per id that depends only on (seed, id): same in a batch or alone."""
    draws = [
        int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "big")
        for i in ids
    ]
    return np.asarray(draws, dtype=np.float64) / 2.0**64


def tie_break(comparisons: Sequence[Comparison], seed: int) -> np.ndarray:
    """A uniform draw per comparison that depends only on (seed, its texts): the same for a
    row routed offline and for that row imported as a Label Studio task under another id."""
    keys = [f"{c.prompt}\x00{c.response_a}\x00{c.response_b}" for c in comparisons]
    return stable_uniform(keys, seed)


def judge_errors(comparisons: Sequence[Comparison]) -> tuple[np.ndarray, np.ndarray]:
    """Rows with both a judge label and a human vote, and whether the judge got them wrong."""
    rows = [
        i
        for i, c in enumerate(comparisons)
        if c.judge_label is not None and c.first_human is not None
    ]
    wrong = np.array([comparisons[i].judge_label != comparisons[i].first_human for i in rows])
    return np.asarray(rows, dtype=int), wrong.astype(int)


class RoutingStrategy(ABC):
    """Base class. ``fixed_human_share`` is set by strategies that ignore the budget."""

    name: ClassVar[str]
    learned: ClassVar[bool] = False
    fixed_human_share: ClassVar[float | None] = None

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters and their values (scikit-learn's convention: each
        parameter is stored under its own name)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def fit(
        self,
        features: np.ndarray,
        comparisons: Sequence[Comparison],
        feature_names: list[str],
        sample_weight: np.ndarray | None = None,
    ) -> RoutingStrategy:
        """Learn from labelled comparisons. ``sample_weight`` (e.g. inverse propensities of
        being labelled) is used by strategies that fit a model on individual comparisons."""
        self.feature_names_ = list(feature_names)
        return self

    @abstractmethod
    def score(self, features: np.ndarray, comparisons: Sequence[Comparison]) -> np.ndarray: ...

    def contributions(self, features: np.ndarray) -> np.ndarray | None:
        """Per-feature share of each score (n x features), or None if not additive."""
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.get_params(),
            "feature_names": getattr(self, "feature_names_", []),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoutingStrategy:
        strategy = cls(**data["params"])
        strategy._load_state(data)
        return strategy

    def _load_state(self, data: dict[str, Any]) -> None:
        self.feature_names_ = data.get("feature_names", [])


class RandomStrategy(RoutingStrategy):
    """Uniformly random: the baseline every other strategy is measured against."""

    name = "random"

    def score(self, features: np.ndarray, comparisons: Sequence[Comparison]) -> np.ndarray:
        return stable_uniform([c.id for c in comparisons], self.seed)


class AllHumanStrategy(RandomStrategy):
    """Every comparison to humans, whatever the budget (a reference point)."""

    name = "all-human"
    fixed_human_share = 1.0


class AllJudgeStrategy(RandomStrategy):
    """Every comparison to the judge, except where it failed (a reference point)."""

    name = "all-judge"
    fixed_human_share = 0.0


class UncertaintyStrategy(RoutingStrategy):
    """The ten-line rule a team lead would write: the judge failed, then its label is a tie,
    then it changed its answer with the order, then low confidence (in steps of 0.1), then
    other judges disagreeing; random among equals. Learns nothing, so it transfers."""

    name = "uncertainty"
    TIERS: ClassVar[tuple[tuple[str, float], ...]] = (
        ("judge=failed", 256.0),
        ("judge=tie", 128.0),
        ("judge_consistent=no", 64.0),
    )
    """Each tier outweighs everything below it: 10 doubt steps x 4 + 2 + 0.5 < 64."""

    def score(self, features: np.ndarray, comparisons: Sequence[Comparison]) -> np.ndarray:
        column = {name: i for i, name in enumerate(self.feature_names_)}
        score = sum(weight * features[:, column[name]] for name, weight in self.TIERS)
        doubt_steps = np.floor(np.round(features[:, column["judge_doubt"]] * 10, 6))
        return (
            score
            + 4.0 * np.minimum(doubt_steps, 10)
            + 2.0 * features[:, column["panel_disagreement"]]
            + 0.5 * tie_break(comparisons, self.seed)
        )


class JudgeConsistencyStrategy(RoutingStrategy):
    """Judge disagreed with itself across answer orders (or gave no answer) first; then random."""

    name = "judge-consistency"
    SIGNALS = ("judge_consistent=no", "judge=failed")

    def score(self, features: np.ndarray, comparisons: Sequence[Comparison]) -> np.ndarray:
        flagged = self.contributions(features).sum(axis=1)
        return flagged + 0.5 * stable_uniform([c.id for c in comparisons], self.seed)

    def contributions(self, features: np.ndarray) -> np.ndarray:
        weights = np.array([name in self.SIGNALS for name in self.feature_names_], dtype=float)
        return features * weights


class LinearStrategy(RoutingStrategy):
    """A strategy linear in a design matrix built from the features:
    ``score = design(features) @ coef_ + intercept_``.

    The design is the chosen feature columns, optionally followed by their products with a
    few context columns (interactions). Every design term belongs to one feature column, so
    linear strategies explain themselves exactly (contribution = coefficient x term, summed
    per feature), and refit by shrinking toward a prior: ``blend`` averages coefficients.
    """

    learned = True
    feature_prefixes: ClassVar[tuple[str, ...] | None] = None
    """Restrict the design to features whose names start with these (None: all)."""
    interaction_features: ClassVar[tuple[str, ...]] = ()
    """Context features each design column is also multiplied by."""

    def score(self, features: np.ndarray, comparisons: Sequence[Comparison]) -> np.ndarray:
        # Row by row, not a matrix product (whose last bits depend on the rows around a
        # row): a comparison scores the same alone, in an import, or in a streamed chunk.
        return (self._design(features) * self.coef_).sum(axis=1) + self.intercept_

    def contributions(self, features: np.ndarray) -> np.ndarray:
        terms = self._design(features) * self.coef_
        blocks = 1 + len(self.interaction_features)
        per_column = terms.reshape(len(features), blocks, len(self._columns)).sum(axis=1)
        full = np.zeros(features.shape, dtype=float)
        full[:, self._columns] = per_column
        return full

    @property
    def _columns(self) -> np.ndarray:
        names = self.feature_names_
        if self.feature_prefixes is None:
            return np.arange(len(names))
        return np.array([i for i, n in enumerate(names) if n.startswith(self.feature_prefixes)])

    def _design(self, features: np.ndarray) -> np.ndarray:
        base = features[:, self._columns]
        contexts = [self.feature_names_.index(n) for n in self.interaction_features]
        return np.hstack([base, *(base * features[:, [c]] for c in contexts)])

    def blend(self, prior: LinearStrategy, weight: float) -> LinearStrategy:
        """This strategy's coefficients pulled toward ``prior``'s; ``weight`` is this side's."""
        self.coef_ = weight * self.coef_ + (1 - weight) * prior.coef_
        self.intercept_ = weight * self.intercept_ + (1 - weight) * prior.intercept_
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "intercept": round(float(self.intercept_), 6),
            "coef": [round(float(c), 6) for c in self.coef_],
            "training": getattr(self, "training_", {}),
        }

    def _load_state(self, data: dict[str, Any]) -> None:
        super()._load_state(data)
        self.coef_ = np.asarray(data["coef"], dtype=float)
        self.intercept_ = float(data["intercept"])
        self.training_ = data.get("training", {})


class JudgeErrorStrategy(LinearStrategy):
    """Predicts where the judge disagrees with the human label (logistic regression).

    Score is the log-odds that the judge is wrong. Every feature also enters multiplied by
    the judge's state (decisive, tie, inconsistent): the same text signal means opposite
    things there. Two responses that are nearly the same make a decisive verdict suspect
    (humans call many of those a tie) and a tie verdict plausible.
    """

    name = "judge-error"
    interaction_features = ("judge=decisive", "judge=tie", "judge_consistent=no")

    def __init__(self, seed: int = 0, C: float = 0.03) -> None:
        super().__init__(seed)
        self.C = C

    def fit(
        self,
        features: np.ndarray,
        comparisons: Sequence[Comparison],
        feature_names: list[str],
        sample_weight: np.ndarray | None = None,
    ) -> JudgeErrorStrategy:
        super().fit(features, comparisons, feature_names)
        rows, wrong = judge_errors(comparisons)
        if len(set(wrong.tolist())) < 2:
            raise ValueError(
                f"need comparisons where the judge is both right and wrong to fit {self.name!r} "
                f"({len(rows)} with a judge label and a human vote)"
            )
        model = LogisticRegression(C=self.C, max_iter=5000)
        weight = None if sample_weight is None else sample_weight[rows]
        model.fit(self._design(features[rows]), wrong, sample_weight=weight)
        self.coef_, self.intercept_ = model.coef_[0], float(model.intercept_[0])
        self.training_ = {"n_labelled": len(rows), "judge_error_rate": float(wrong.mean())}
        return self


class SimpleLogisticStrategy(JudgeErrorStrategy):
    """The simple baseline: judge-error logistic regression on lengths, word overlap,
    category and the judge's verdict and consistency only, without interactions."""

    name = "simple-logreg"
    interaction_features = ()

    def __init__(self, seed: int = 0, C: float = 1.0) -> None:
        super().__init__(seed, C)

    feature_prefixes = (
        "prompt_len::",
        "shorter_len::",
        "longer_len::",
        "len_diff::",
        "rouge_1::",
        "category=",
        "judge=",
        "judge_consistent=",
    )


class SignalPrior(NamedTuple):
    """A judge-reliability column's weight before any data, the sign it keeps, and how far
    data may move it (prior sd; None: the strategy's ``signal_sd``)."""

    weight: float
    sign: int
    sd: float | None = None


SIGNAL_PRIORS: dict[str, SignalPrior] = {
    "judge=tie": SignalPrior(2.5, 1, sd=0.25),
    "judge=failed": SignalPrior(1.0, 1),
    "judge_consistent=no": SignalPrior(1.5, 1),
    "judge_consistent=yes": SignalPrior(0.0, -1),
    "judge_strength<1": SignalPrior(0.5, 1),
    "judge_strength<=0.5": SignalPrior(0.5, 1),
    "judge_doubt": SignalPrior(4.0, 1),
    "panel_disagreement": SignalPrior(3.0, 1),
    "panel_overrules=yes": SignalPrior(1.0, 1),
}
"""Judge-reliability columns. Weights are log-odds of a judge error: a confidence of 0.5
adds 2 against one of 1; a panel voting wholly against the label adds 3. Data move them,
never across zero, so these signals act monotonically; a signal the fitting data never
show keeps its weight before data. A tie is wrong whenever the humans pick a side, so its
weight depends on how often a campaign's humans tie: held near a high value (most
preference data have few human ties; MT-Bench's 25% are the exception), for a campaign's
refits to lower where its humans tie often."""


TIE_BREAK = 1e-6


class JudgeSignalsStrategy(JudgeErrorStrategy):
    """The default: a judge-error logistic model that transfers across judges and datasets.

    The judge-reliability signals (``SIGNAL_PRIORS``) carry the score, each with a sign
    constraint and a Gaussian prior around a stated weight, so a signal absent from the
    fitting data still counts and no fit can make doubt lower a score. Content features
    (lengths, overlap, flags, tags, ``judge_pick``) are in the design, so a campaign's refits
    can learn them, but their weights are fixed at zero unless ``content=True`` (then with a
    prior around zero of ``content_sd``): they did not survive leave-one-dataset-out
    validation (docs/evaluation.md).
    """

    name = "judge-signals"
    interaction_features = ()

    def __init__(
        self, seed: int = 0, signal_sd: float = 0.5, content: bool = False, content_sd: float = 0.25
    ) -> None:
        super().__init__(seed)
        self.signal_sd = signal_sd
        self.content = content
        self.content_sd = content_sd

    def fit(
        self,
        features: np.ndarray,
        comparisons: Sequence[Comparison],
        feature_names: list[str],
        sample_weight: np.ndarray | None = None,
    ) -> JudgeSignalsStrategy:
        RoutingStrategy.fit(self, features, comparisons, feature_names)
        rows, wrong = judge_errors(comparisons)
        if len(set(wrong.tolist())) < 2:
            raise ValueError(
                f"need comparisons where the judge is both right and wrong to fit {self.name!r} "
                f"({len(rows)} with a judge label and a human vote)"
            )
        weight = np.ones(len(rows)) if sample_weight is None else sample_weight[rows]
        design = self._design(features[rows])
        mean, sd, bounds = self._prior()
        self.coef_, self.intercept_ = penalised_logistic(
            design, wrong, weight / weight.mean(), mean, sd, bounds
        )
        self.training_ = {"n_labelled": len(rows), "judge_error_rate": float(wrong.mean())}
        return self

    def score(self, features: np.ndarray, comparisons: Sequence[Comparison]) -> np.ndarray:
        """Log-odds of a judge error; exact ties (common: few signals, no content) are
        broken at random by a jitter far below any weight, never by input order. The draw
        depends on the comparison's texts, not its id, so a file routed offline and the
        same comparisons imported as Label Studio tasks (other ids) break ties alike."""
        jitter = TIE_BREAK * tie_break(comparisons, self.seed)
        return super().score(features, comparisons) + (jitter if len(comparisons) else 0.0)

    def _prior(self) -> tuple[np.ndarray, np.ndarray, list[tuple[float | None, float | None]]]:
        """Prior mean, prior sd and bounds of each design column."""
        mean, sd, bounds = [], [], []
        for name in self.feature_names_:
            if name in SIGNAL_PRIORS:
                prior = SIGNAL_PRIORS[name]
                mean.append(prior.weight)
                sd.append(self.signal_sd if prior.sd is None else prior.sd)
                bounds.append((0.0, None) if prior.sign > 0 else (None, 0.0))
            elif self.content and not name.startswith("judge="):
                mean.append(0.0)
                sd.append(self.content_sd)
                bounds.append((None, None))
            else:
                mean.append(0.0)
                sd.append(1.0)
                bounds.append((0.0, 0.0))
        return np.array(mean), np.array(sd), bounds


def penalised_logistic(
    design: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    prior_mean: np.ndarray,
    prior_sd: np.ndarray,
    bounds: list[tuple[float | None, float | None]],
) -> tuple[np.ndarray, float]:
    """MAP logistic regression: weighted log-loss plus ``|coef - prior_mean|^2 / 2 sd^2``,
    each coefficient within its bounds (the intercept is free). Returns (coef, intercept)."""
    precision = 1.0 / prior_sd**2

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        coef, intercept = params[:-1], params[-1]
        z = design @ coef + intercept
        loss = weight @ (np.logaddexp(0.0, z) - y * z)
        residual = weight * (expit(z) - y)
        gap = coef - prior_mean
        value = loss + 0.5 * precision @ gap**2
        gradient = np.append(design.T @ residual + precision * gap, residual.sum())
        return float(value), gradient

    low = np.array([-np.inf if lo is None else lo for lo, _ in bounds])
    high = np.array([np.inf if hi is None else hi for _, hi in bounds])
    start = np.append(np.clip(prior_mean, low, high), 0.0)
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=[*bounds, (None, None)])
    return result.x[:-1], float(result.x[-1])


class PPMStrategy(LinearStrategy):
    """HyPER: route where the performance prediction model expects a human label to help.

    ``fit`` samples label mixes on ``n_splits`` grouped pool/held-out splits of the labelled
    data, scores each with a proxy reward model (``proxy_rm``, one of ``ppm.PROXY_RMS``),
    and fits the PPM on all of them. The score
    of a comparison is the paper's top-k gain in the large-pool limit (the PPM's first-order
    terms), so it does not depend on the batch it arrives in. ``select`` implements the
    paper's simulated sampling for a whole batch at a budget.
    """

    name = "hyper"

    def __init__(
        self,
        seed: int = 0,
        degree: int = 2,
        n_mixes: int = 300,
        n_splits: int = 3,
        held_out_share: float = 0.25,
        n_candidates: int = 500,
        proxy_rm: str = "ridge",
    ) -> None:
        super().__init__(seed)
        self.degree = degree
        self.n_mixes = n_mixes
        self.n_splits = n_splits
        self.held_out_share = held_out_share
        self.n_candidates = n_candidates
        self.proxy_rm = proxy_rm

    def training_mixes(
        self, features: np.ndarray, comparisons: Sequence[Comparison]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sampled mixes as share vectors, each one's proxy reward-model accuracy, and the
        pool/held-out split each was scored on."""
        labelled = np.array([c.first_human is not None for c in comparisons])
        index = np.flatnonzero(labelled)
        groups = [comparisons[i].group for i in index]
        if len(set(groups)) < 2:
            raise ValueError(f"need human labels in at least 2 groups to fit {self.name!r}")
        rng = np.random.default_rng(self.seed)
        splitter = GroupShuffleSplit(
            self.n_splits, test_size=self.held_out_share, random_state=self.seed
        )
        vectors, targets, blocks = [], [], []
        for block, (pool, held_out) in enumerate(splitter.split(index, groups=groups)):
            pool_rows = index[pool]
            scorer = MixScorer(
                [comparisons[i] for i in pool_rows],
                [comparisons[i] for i in index[held_out]],
                proxy_rm=self.proxy_rm,
            )
            mixes = sample_mixes(features[pool_rows], self.n_mixes, rng)
            vectors.append(mix_vectors(features[pool_rows], mixes))
            targets.append(np.array([scorer.score(mix) for mix in mixes]))
            blocks.append(np.full(len(mixes), block))
        return np.vstack(vectors), np.concatenate(targets), np.concatenate(blocks)

    def fit(
        self,
        features: np.ndarray,
        comparisons: Sequence[Comparison],
        feature_names: list[str],
        sample_weight: np.ndarray | None = None,
    ) -> PPMStrategy:
        super().fit(features, comparisons, feature_names)
        vectors, targets, blocks = self.training_mixes(features, comparisons)
        self.ppm_ = PerformancePredictionModel(self.degree).fit(vectors, targets)
        self.coef_ = self.ppm_.linear_terms(features.shape[1])
        self.intercept_ = 0.0
        self.training_ = {
            "n_labelled": int(sum(c.first_human is not None for c in comparisons)),
            "n_mixes": len(targets),
            "target_mean": float(targets.mean()),
            "target_std": float(targets.std()),
            "ppm_quality": [
                asdict(cross_validate_ppm(vectors, targets, degree, blocks, seed=self.seed))
                for degree in (1, 2)
            ],
        }
        return self

    def select(self, features: np.ndarray, budget: int) -> np.ndarray:
        """Simulated sampling: the best of ``n_candidates`` mixes of size ``budget``.

        Candidates are the top-k-gain mix plus knapsack and random mixes, ranked by the
        full (quadratic) PPM over the batch's feature shares.
        """
        n = features.shape[0]
        rng = np.random.default_rng(self.seed)
        top = np.zeros(n, dtype=bool)
        top[np.argsort(-self.score(features, []), kind="stable")[:budget]] = True
        if budget in (0, n):
            return top
        candidates = [top]
        while len(candidates) < self.n_candidates:
            sampler = knapsack_mix if len(candidates) % 2 else None
            candidates.append(
                sampler(features, budget, rng) if sampler else random_mix(n, budget, rng)
            )
        stacked = np.vstack(candidates)
        return stacked[int(np.argmax(self.ppm_.predict(mix_vectors(features, stacked))))]

    def blend(self, prior: LinearStrategy, weight: float) -> PPMStrategy:
        super().blend(prior, weight)
        assert isinstance(prior, PPMStrategy)
        self.ppm_.coef_ = weight * self.ppm_.coef_ + (1 - weight) * prior.ppm_.coef_
        self.ppm_.intercept_ = weight * self.ppm_.intercept_ + (1 - weight) * prior.ppm_.intercept_
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "ppm": self.ppm_.to_dict()}

    def _load_state(self, data: dict[str, Any]) -> None:
        super()._load_state(data)
        self.ppm_ = PerformancePredictionModel.from_dict(data["ppm"])


STRATEGIES: dict[str, type[RoutingStrategy]] = {
    cls.name: cls
    for cls in (
        RandomStrategy,
        AllHumanStrategy,
        AllJudgeStrategy,
        UncertaintyStrategy,
        JudgeConsistencyStrategy,
        SimpleLogisticStrategy,
        JudgeErrorStrategy,
        JudgeSignalsStrategy,
        PPMStrategy,
    )
}


def make_strategy(name: str, **params: Any) -> RoutingStrategy:
    try:
        return STRATEGIES[name](**params)
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r} (choose from: {', '.join(STRATEGIES)})"
        ) from None


def strategy_from_dict(data: dict[str, Any]) -> RoutingStrategy:
    return STRATEGIES[data["name"]].from_dict(data)
