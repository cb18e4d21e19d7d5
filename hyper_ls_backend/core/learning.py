"""Learning from a campaign's human labels: weighted refits that must earn their adoption.

A ``Refitter`` collects the comparisons a campaign has seen and the human labels that came
back, each with the probability it had of being labelled (its propensity). ``refit``
proposes a new router shrunk toward the prior, measures it against the current one on
held-out labelled groups, and adopts it only if it does not measure worse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.strategies import judge_errors

MIN_HELD_OUT = 20
"""Fewer held-out labels than this (or only one outcome among them): no verdict, no adoption."""


@dataclass(frozen=True)
class RefitOutcome:
    router: Router
    """The router to use from now on: the new version if adopted, else the current one."""
    adopted: bool
    quality: dict[str, Any]
    candidate: Router | None = None
    """The version that was measured (fitted without the held-out groups), adopted or not."""


def error_auc(
    router: Router, comparisons: Sequence[Comparison], weight: np.ndarray
) -> float | None:
    """How well the router's scores rank judge errors (weighted ROC AUC), if measurable."""
    rows, wrong = judge_errors(comparisons)
    if len(rows) < MIN_HELD_OUT or len(set(wrong.tolist())) < 2:
        return None
    scores, _ = router.score([comparisons[i] for i in rows])
    return float(roc_auc_score(wrong, scores, sample_weight=weight[rows]))


@dataclass
class Refitter:
    """Accumulates a campaign's labels (with propensities) and refits on demand."""

    prior_strength: float = 200.0
    held_out_share: float = 0.25
    seed: int = 0
    labelled: list[Comparison] = field(default_factory=list)
    propensities: list[float] = field(default_factory=list)
    seen: list[Comparison] = field(default_factory=list)

    def observe(self, comparisons: Sequence[Comparison], propensity: float) -> None:
        """Human labels came back for ``comparisons``, each labelled with this probability."""
        if not 0.0 < propensity <= 1.0:
            raise ValueError(f"propensity must be in (0, 1], got {propensity}")
        self.labelled.extend(comparisons)
        self.propensities.extend([propensity] * len(comparisons))

    def see(self, comparisons: Sequence[Comparison]) -> None:
        """Comparisons that arrived (labelled or not): what typical inputs look like."""
        self.seen.extend(c.without_labels() for c in comparisons)

    def weights(self) -> np.ndarray:
        """Inverse propensities, scaled to average 1 (so the prior's strength keeps meaning)."""
        inverse = 1.0 / np.asarray(self.propensities)
        return inverse / inverse.mean()

    def refit(self, prior: Router, current: Router | None = None) -> RefitOutcome:
        """Fit on all labels; adopt if, fitted without the held-out groups, the candidate
        ranks their judge errors at least as well as ``current`` (default: the prior)."""
        current = current or prior
        if not self.labelled:
            return RefitOutcome(current, False, {"n_labels": 0})
        weight = self.weights()
        groups = [c.group for c in self.labelled]
        quality: dict[str, Any] = {"n_labels": len(self.labelled)}
        candidate_auc = current_auc = None
        trial: Router | None = None
        if len(set(groups)) >= 2:
            splitter = GroupShuffleSplit(1, test_size=self.held_out_share, random_state=self.seed)
            fit_rows, held_rows = next(splitter.split(groups, groups=groups))
            try:
                trial = prior.refit(
                    [self.labelled[i] for i in fit_rows],
                    self.prior_strength,
                    weight[fit_rows],
                    self.seen,
                )
            except ValueError as error:  # e.g. the judge was never wrong on these labels
                quality["error"] = str(error)
            else:
                held = [self.labelled[i] for i in held_rows]
                candidate_auc = error_auc(trial, held, weight[held_rows])
                current_auc = error_auc(current, held, weight[held_rows])
        quality |= {"held_out_auc": candidate_auc, "current_held_out_auc": current_auc}
        adopted = (
            candidate_auc is not None and current_auc is not None and candidate_auc >= current_auc
        )
        if not adopted:
            return RefitOutcome(current, False, quality, trial)
        router = prior.refit(self.labelled, self.prior_strength, weight, self.seen)
        return RefitOutcome(router, True, quality, trial)
