"""The router: features + a strategy + the budget rules, with an explanation per decision.

``Router.route(batch, budget)`` sends exactly ``floor(budget * N)`` comparisons to humans
(comparisons whose judge failed always go, and count against the budget): the campaign
policy's ranked batch (``policy.py``), which also decides a campaign's imports one batch or
one task at a time.

A fitted router saves to a small, versioned, human-readable JSON file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.features import Featurizer
from hyper_ls_backend.core.guarantee import Certificate
from hyper_ls_backend.core.policy import (
    CampaignPolicy,
    Candidate,
    Decision,
    LedgerState,
    Route,
    budget_count,
)
from hyper_ls_backend.core.reasons import reason
from hyper_ls_backend.core.signals import JudgeSignals, judge_signals
from hyper_ls_backend.core.strategies import (
    LinearStrategy,
    RoutingStrategy,
    make_strategy,
    strategy_from_dict,
)

ARTIFACT_FORMAT = "hyper-ls-router/2"
"""Version 2: the judge-reliability features (signals.py). Older artifacts have other
columns and must be refitted."""
N_REASONS = 3
NUMBER_LIST = re.compile(r"\[\s*([-+0-9.eE,\s]+?)\s*\]")
REFERENCE_SCORES = 201
"""Quantiles of training-set scores kept with the model, to seed the streaming threshold."""


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


def route_policy(budget: float, certificate: Certificate | None = None) -> CampaignPolicy:
    """The policy ``Router.route`` (and ``hyper-ls route``) decides by: the campaign
    policy's ranked batch with no audits, on an empty ledger, in the strategy's own order."""
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"budget must be a share between 0 and 1, got {budget}")
    return CampaignPolicy(
        budget, audit_share=0.0, min_batch=0, doubtful_first=False, certificate=certificate
    )


class Router:
    """Scores comparisons with a strategy over binned features (scikit-learn style).

    Parameters
    ----------
    strategy:
        A strategy name from ``STRATEGIES`` or an instance.
    featurizer:
        Reused as is when given (refits keep the prior's columns); fitted otherwise. A
        strategy that learns nothing takes its columns at once, so it can score before
        ``fit`` (or ``fit_reference``) sets the reference.
    """

    def __init__(
        self,
        strategy: str | RoutingStrategy = "judge-signals",
        featurizer: Featurizer | None = None,
    ) -> None:
        self.strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
        self.featurizer = featurizer
        if featurizer is not None and not self.strategy.learned:
            self.strategy.feature_names_ = list(featurizer.feature_names_)

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
        self._reference(self.strategy.score(features, comparisons), features.mean(axis=0))

    def _reference(self, scores: np.ndarray, feature_means: np.ndarray) -> None:
        self.reference_scores_ = np.quantile(scores, np.linspace(0, 1, REFERENCE_SCORES))
        self.feature_means_ = feature_means

    def fit_reference(self, scores: np.ndarray, feature_means: np.ndarray, n: int) -> Router:
        """What ``fit`` on ``n`` comparisons sets for a strategy that learns nothing (the
        reference, a version), from their scores and mean feature row: for inputs read as a
        stream, never held together."""
        if self.strategy.learned:
            raise TypeError(f"{self.strategy.name!r} learns from labels: use fit")
        self._reference(scores, feature_means)
        self.fitted_at_ = datetime.now(UTC).isoformat(timespec="seconds")
        self.n_fitted_ = n
        return self._stamp()

    # -- answering ------------------------------------------------------------------------

    def score(
        self,
        comparisons: Sequence[Comparison],
        n_jobs: int = 1,
        progress: Callable[[int], None] | None = None,
        signals: Sequence[JudgeSignals] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and the feature matrix they came from; ``signals`` as in
        ``Featurizer.transform``."""
        features = self.featurizer.transform(
            comparisons, n_jobs=n_jobs, progress=progress, signals=signals
        )
        return self.strategy.score(features, comparisons), features

    def explain(
        self, features: np.ndarray, comparisons: Sequence[Comparison] | None = None
    ) -> list[list[str]]:
        """Top features behind each score, strongest first, in words with the feature and
        its contribution in brackets: ``the judge changed its answer when the order was
        swapped [judge_consistent=no +0.654]``. ``comparisons`` (the rows of ``features``)
        lets a reason quote the comparison's own values (its confidence, its panel).

        Contributions are measured against the average input and summed per feature family
        (all bins of one measure, all values of one tag), named by the value this comparison
        has: a feature every comparison shares explains nothing, one that sets it apart does.
        """
        signals = [judge_signals(c) for c in comparisons] if comparisons else None
        return self.explain_signals(features, signals)

    def explain_signals(
        self, features: np.ndarray, signals: Sequence[JudgeSignals] | None
    ) -> list[list[str]]:
        """``explain`` from the rows' judge signals (``judge_signals``) rather than their
        comparisons."""
        contributions = self.strategy.contributions(features)
        if contributions is None:
            return [[f"{self.strategy.name} strategy"] for _ in range(len(features))]
        centred = contributions - self.strategy.contributions(self.feature_means_[None, :])
        families, family_of = self._families()
        by_family = np.zeros((len(features), len(families)))
        np.add.at(by_family.T, family_of, centred.T)
        names = self.featurizer.feature_names_
        # Each row's families by the size of their total, strongest first (a stable sort:
        # equal ones in family order), and the column each has on: its last nonzero one.
        top = np.argsort(-np.abs(by_family), axis=1, kind="stable")[:, :N_REASONS]
        rows, columns = np.nonzero(features != 0)
        active = np.full(by_family.shape, -1, dtype=np.intp)
        np.maximum.at(active, (rows, family_of[columns]), columns)
        totals = np.take_along_axis(by_family, top, axis=1).tolist()
        actives = np.take_along_axis(active, top, axis=1).tolist()
        quoted = signals if signals else [None] * len(features)
        reasons = []
        for top_families, top_actives, top_totals, judged in zip(
            top.tolist(), actives, totals, quoted, strict=True
        ):
            reasons.append(
                [
                    reason(names[j] if j >= 0 else None, families[f], total, judged)
                    for f, j, total in zip(top_families, top_actives, top_totals, strict=True)
                    if abs(total) > 1e-9
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
        certificate: Certificate | None = None,
    ) -> RoutingResult:
        """Send exactly ``floor(budget * N)`` comparisons to humans (see module doc); with a
        ``certificate``, those scoring over its threshold, ``budget`` capping them.

        This is the campaign policy's ranked batch with no audits, on an empty ledger, in
        the strategy's own order (doubtful verdicts are not put first, so each strategy is
        measured as it ranks). ``progress`` is called with the number of comparisons
        featurized so far, in steps; ``n_jobs`` processes measure the texts.
        """
        policy = route_policy(budget, certificate)
        decisions = policy.decide(
            [Candidate(c.id, c) for c in comparisons], LedgerState(), self, progress, n_jobs
        )
        allowed = budget_count(policy.share(self), len(comparisons))
        return RoutingResult(decisions, allowed, sum(c.judge_failed for c in comparisons))

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
                f"not a router artifact of format {ARTIFACT_FORMAT!r} (got {data.get('format')!r}):"
                " refit it with 'hyper-ls fit'"
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
