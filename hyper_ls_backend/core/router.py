"""The router: features + a strategy + the budget rules, with an explanation per decision.

Two ways to route:
- ``Router.route(batch, budget)``: exactly ``floor(budget * N)`` comparisons to humans
  (comparisons whose judge failed always go, and count against the budget);
- ``StreamingRouter.decide(one)``: one comparison at a time, never past the budget share
  of what has arrived so far.

A fitted router saves to a small, versioned, human-readable JSON file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.features import Featurizer
from hyper_ls_backend.core.strategies import (
    LinearStrategy,
    PPMStrategy,
    RoutingStrategy,
    make_strategy,
    strategy_from_dict,
)

ARTIFACT_FORMAT = "hyper-ls-router/1"
N_REASONS = 3
NUMBER_LIST = re.compile(r"\[\s*([-+0-9.eE,\s]+?)\s*\]")
REFERENCE_SCORES = 201
"""Quantiles of training-set scores kept with the model, to seed the streaming threshold."""


class Route(StrEnum):
    HUMAN = "human"
    AI = "ai"


@dataclass(frozen=True)
class Decision:
    """Where one comparison goes, how strongly, and why."""

    id: str
    route: Route
    score: float
    reasons: list[str]
    forced: bool = False
    """True when the route was not the strategy's choice (judge failed, fixed strategy)."""

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route.value,
            "score": round(self.score, 6),
            "reasons": self.reasons,
        }


@dataclass(frozen=True)
class RoutingResult:
    decisions: list[Decision]
    budget: int
    """floor(budget share x N): how many comparisons the budget allows."""
    forced_human: int
    """Comparisons that had to go to humans (judge failed)."""

    @property
    def n_human(self) -> int:
        return sum(d.route is Route.HUMAN for d in self.decisions)

    @property
    def over_budget(self) -> bool:
        return self.n_human > self.budget


JUDGE_FAILED_REASON = "judge failed: no usable verdict, a human must label it"


def budget_count(share: float, n: int) -> int:
    """floor(share x n), immune to float noise (0.29 x 100 is 28.999999999999996)."""
    return math.floor(round(share * n, 9))


def forced_to_human(comparison: Comparison) -> bool:
    return comparison.judge_failed


class Router:
    """Scores comparisons with a strategy over binned features (scikit-learn style).

    Parameters
    ----------
    strategy:
        A strategy name from ``STRATEGIES`` or an instance.
    featurizer:
        Reused as is when given (refits keep the prior's columns); fitted otherwise.
    """

    def __init__(
        self, strategy: str | RoutingStrategy = "judge-error", featurizer: Featurizer | None = None
    ) -> None:
        self.strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
        self.featurizer = featurizer

    # -- learning -------------------------------------------------------------------------

    def fit(
        self, comparisons: Sequence[Comparison], sample_weight: np.ndarray | None = None
    ) -> Router:
        if self.featurizer is None:
            self.featurizer = Featurizer().fit(comparisons)
        features = self.featurizer.transform(comparisons)
        self.strategy.fit(features, comparisons, self.featurizer.feature_names_, sample_weight)
        self._set_reference(features, comparisons)
        self.fitted_at_ = datetime.now(UTC).isoformat(timespec="seconds")
        self.n_fitted_ = len(comparisons)
        return self._stamp()

    def refit(
        self,
        labelled: Sequence[Comparison],
        prior_strength: float = 200.0,
        sample_weight: np.ndarray | None = None,
        reference: Sequence[Comparison] | None = None,
    ) -> Router:
        """A new router fitted on ``labelled`` with this one's columns, shrunk toward it.

        The new coefficients are ``w * fresh + (1 - w) * prior`` with
        ``w = n / (n + prior_strength)``: a project with few labels stays close to the prior.
        ``reference`` (default: ``labelled``) is what typical inputs look like: pass every
        comparison the campaign has seen, since labelled ones are a biased sample of them.
        """
        strategy = make_strategy(self.strategy.name, **self.strategy.get_params())
        fresh = Router(strategy, featurizer=self.featurizer).fit(labelled, sample_weight)
        if isinstance(fresh.strategy, LinearStrategy) and isinstance(self.strategy, LinearStrategy):
            n = fresh.strategy.training_.get("n_labelled", len(labelled))
            fresh.strategy.blend(self.strategy, n / (n + prior_strength))
        typical = reference or labelled
        fresh._set_reference(fresh.featurizer.transform(typical), typical)
        return fresh._stamp()

    def with_coefficients(
        self,
        coef: np.ndarray,
        intercept: float,
        n_labelled: int,
        reference: Sequence[Comparison],
    ) -> Router:
        """A new router with this one's linear strategy and columns and the given
        coefficients (what a refit computed); ``reference`` as in ``refit``."""
        if not isinstance(self.strategy, LinearStrategy):
            raise TypeError(f"{self.strategy.name!r} is not a linear strategy")
        strategy = make_strategy(self.strategy.name, **self.strategy.get_params())
        strategy.feature_names_ = list(self.strategy.feature_names_)
        strategy.coef_ = np.asarray(coef, dtype=float)
        strategy.intercept_ = float(intercept)
        strategy.training_ = {"n_labelled": n_labelled, "refit": "correction"}
        fresh = Router(strategy, featurizer=self.featurizer)
        fresh._set_reference(fresh.featurizer.transform(reference), reference)
        fresh.fitted_at_ = datetime.now(UTC).isoformat(timespec="seconds")
        fresh.n_fitted_ = n_labelled
        return fresh._stamp()

    def _set_reference(self, features: np.ndarray, comparisons: Sequence[Comparison]) -> None:
        """Remember what typical inputs look like: score quantiles seed the streaming
        threshold, feature means centre the explanations."""
        scores = self.strategy.score(features, comparisons)
        self.reference_scores_ = np.quantile(scores, np.linspace(0, 1, REFERENCE_SCORES))
        self.feature_means_ = features.mean(axis=0)

    # -- answering ------------------------------------------------------------------------

    def score(
        self,
        comparisons: Sequence[Comparison],
        n_jobs: int = 1,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and the feature matrix they came from."""
        features = self.featurizer.transform(comparisons, n_jobs=n_jobs, progress=progress)
        return self.strategy.score(features, comparisons), features

    def explain(self, features: np.ndarray) -> list[list[str]]:
        """Top features behind each score, strongest first: ``judge_consistent=no (+0.84)``.

        Contributions are measured against the average input and summed per feature family
        (all bins of one measure, all values of one tag), named by the value this comparison
        has: a feature every comparison shares explains nothing, one that sets it apart does.
        """
        contributions = self.strategy.contributions(features)
        if contributions is None:
            return [[f"{self.strategy.name} strategy"] for _ in range(len(features))]
        centred = contributions - self.strategy.contributions(self.feature_means_[None, :])
        families, family_of = self._families()
        by_family = np.zeros((len(features), len(families)))
        np.add.at(by_family.T, family_of, centred.T)
        names = self.featurizer.feature_names_
        reasons = []
        for row, totals in zip(features, by_family, strict=True):
            active = {family_of[j]: names[j] for j in np.flatnonzero(row)}
            top = np.argsort(-np.abs(totals), kind="stable")[:N_REASONS]
            reasons.append(
                [
                    f"{active.get(f, 'no ' + families[f])} ({totals[f]:+.3f})"
                    for f in top
                    if abs(totals[f]) > 1e-9
                ]
            )
        return reasons

    def feature_weights(self) -> list[dict[str, Any]]:
        """Each feature's weight on its own in the score, strongest first (the paper's
        feature-gain analysis, read off the current model)."""
        names = self.featurizer.feature_names_
        contributions = self.strategy.contributions(np.eye(len(names), dtype=np.float32))
        if contributions is None:
            return []
        weights = np.diag(contributions)
        order = np.argsort(-np.abs(weights), kind="stable")
        return [
            {"feature": names[j], "weight": round(float(weights[j]), 4)}
            for j in order
            if weights[j] != 0
        ]

    def _families(self) -> tuple[list[str], np.ndarray]:
        """Feature family names and each column's family index (``len_diff::0.67-1.00`` and
        ``len_diff::0.00-0.33`` are one family)."""
        stems = [re.split(r"::|=", name, maxsplit=1)[0] for name in self.featurizer.feature_names_]
        families = list(dict.fromkeys(stems))
        return families, np.array([families.index(s) for s in stems])

    def route(
        self,
        comparisons: Sequence[Comparison],
        budget: float,
        progress: Callable[[int], None] | None = None,
        n_jobs: int = 1,
    ) -> RoutingResult:
        """Send exactly ``floor(budget * N)`` comparisons to humans (see module doc).

        ``progress`` is called with the number of comparisons featurized so far, in steps;
        ``n_jobs`` processes measure the texts.
        """
        if not 0.0 <= budget <= 1.0:
            raise ValueError(f"budget must be a share between 0 and 1, got {budget}")
        fixed = self.strategy.fixed_human_share
        n = len(comparisons)
        allowed = budget_count(budget if fixed is None else fixed, n)
        scores, features = self.score(comparisons, n_jobs, progress)
        forced = np.array([forced_to_human(c) for c in comparisons], dtype=bool)
        to_human = forced.copy()
        free = allowed - int(forced.sum())
        if free > 0:
            if isinstance(self.strategy, PPMStrategy):
                candidates = np.flatnonzero(~forced)
                chosen = self.strategy.select(features[candidates], free)
                to_human[candidates[chosen]] = True
            else:
                order = np.argsort(-np.where(forced, -np.inf, scores), kind="stable")
                to_human[order[:free]] = True
        explanations = self.explain(features)
        decisions = [
            Decision(
                id=c.id,
                route=Route.HUMAN if to_human[i] else Route.AI,
                score=float(scores[i]),
                reasons=[JUDGE_FAILED_REASON] if forced[i] else explanations[i],
                forced=bool(forced[i]) or fixed is not None,
            )
            for i, c in enumerate(comparisons)
        ]
        return RoutingResult(decisions, allowed, int(forced.sum()))

    # -- persistence ----------------------------------------------------------------------

    def _stamp(self) -> Router:
        """Name this fitted state: strategy, fit time and a digest of the parameters, so two
        fits in the same second (a refit and its trial) never share a version."""
        digest = hashlib.sha1(
            json.dumps(self.strategy.to_dict(), sort_keys=True).encode()
        ).hexdigest()[:8]
        self.version = f"{self.strategy.name}-{self.fitted_at_}-{digest}"
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ARTIFACT_FORMAT,
            "version": self.version,
            "fitted_at": self.fitted_at_,
            "n_fitted": self.n_fitted_,
            "featurizer": self.featurizer.to_dict(),
            "strategy": self.strategy.to_dict(),
            "reference_scores": [round(float(s), 6) for s in self.reference_scores_],
            "feature_means": [round(float(m), 4) for m in self.feature_means_],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Router:
        if data.get("format") != ARTIFACT_FORMAT:
            raise ValueError(
                f"not a router artifact of format {ARTIFACT_FORMAT!r} (got {data.get('format')!r})"
            )
        router = cls(strategy_from_dict(data["strategy"]), Featurizer.from_dict(data["featurizer"]))
        router.reference_scores_ = np.asarray(data["reference_scores"])
        router.feature_means_ = np.asarray(data["feature_means"], dtype=np.float32)
        router.fitted_at_ = data["fitted_at"]
        router.n_fitted_ = data["n_fitted"]
        router.version = data["version"]
        return router

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.to_dict(), indent=1)
        # One line per list of numbers keeps the file readable (and diffable) by a person.
        text = NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
        Path(path).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Router:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not a JSON router artifact ({error.msg})") from None
        return cls.from_dict(data)


@dataclass
class StreamingRouter:
    """Routes comparisons one at a time without exceeding ``budget`` of those seen so far.

    A comparison goes to humans when its score clears the ``1 - budget`` quantile of the
    scores seen so far (seeded with the model's reference scores) and the ledger has room:
    at every moment ``n_human <= floor(budget * n_seen)``, except comparisons whose judge
    failed, which always go and are counted in ``n_forced``. The state is plain numbers and
    a bounded score window so a caller can persist it.
    """

    router: Router
    budget: float
    n_seen: int = 0
    n_human: int = 0
    n_forced: int = 0
    window: list[float] = field(default_factory=list)
    window_size: int = 1_000

    def threshold(self) -> float:
        scores = np.concatenate([self.router.reference_scores_, np.asarray(self.window)])
        return float(np.quantile(scores, 1.0 - self.budget))

    def decide(self, comparison: Comparison) -> Decision:
        scores, features = self.router.score([comparison])
        score = float(scores[0])
        self.n_seen += 1
        fixed = self.router.strategy.fixed_human_share
        room = budget_count(self.budget if fixed is None else fixed, self.n_seen) - self.n_human
        if forced_to_human(comparison):
            self.n_forced += 1
            route, reasons, forced = Route.HUMAN, [JUDGE_FAILED_REASON], True
        else:
            wanted = fixed is not None or score >= self.threshold()
            route = Route.HUMAN if wanted and room > 0 else Route.AI
            reasons, forced = self.router.explain(features)[0], fixed is not None
        if route is Route.HUMAN:
            self.n_human += 1
        self.window = [*self.window, score][-self.window_size :]
        return Decision(comparison.id, route, score, reasons, forced)
