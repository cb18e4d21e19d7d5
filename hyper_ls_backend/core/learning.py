"""Learning from a campaign's human labels: refits anchored on the prior that must earn their
adoption.

A ``Refitter`` collects the comparisons a campaign has seen and the human labels that came
back, each with the probability it had of being labelled (its propensity). ``refit``
proposes a new router and measures it by grouped K-fold cross-validation on the labels; it
is adopted only if it beats the prior by more than noise.

For judge-error routers (logistic models of where the judge is wrong) the refit keeps the
prior's score as an offset and learns a correction on top of it:

    logit P(judge wrong) = a + s * prior_score + design @ delta,   penalty  lambda/2 |delta|^2

``a`` and ``s`` recalibrate the prior (they never change its ranking); ``delta`` moves it.
With few labels ``delta`` stays near zero and the router is the prior; a campaign whose judge
fails where the prior did not expect it moves ``delta`` where its labels say so. ``lambda``
is chosen among a few multiples of the prior's strength by cross-validated log-loss.
Other linear strategies (the PPM) fall back to blending coefficients with the prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import csr_matrix
from scipy.special import expit
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, GroupShuffleSplit

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.strategies import JudgeErrorStrategy, judge_errors

MIN_HELD_OUT = 20
"""Fewer held-out labels than this (or only one outcome among them): no verdict, no adoption."""
PENALTY_PER_LABEL = (0.05, 0.15, 0.5)
"""Candidate L2 penalties on the correction, per label of prior strength (200 -> 10, 30, 100)."""
RECALIBRATION_ONLY = 1e9
"""A penalty so large the correction is zero: the prior, recalibrated."""


@dataclass(frozen=True)
class RefitOutcome:
    router: Router
    """The router to use from now on: the new version if adopted, else the current one."""
    adopted: bool
    quality: dict[str, Any]
    reason: str
    """Why the candidate was adopted or not, in plain words for a team lead."""
    candidate: Router | None = None
    """The version that was measured, adopted or not."""

    @property
    def in_use_auc(self) -> float | None:
        """How well ``router`` ranks the judge's errors on the campaign's labels (held out
        for an adopted candidate; the current router's own AUC otherwise); None when not
        measured."""
        return self.quality.get("held_out_auc" if self.adopted else "current_held_out_auc")


def error_auc(
    router: Router, comparisons: Sequence[Comparison], weight: np.ndarray
) -> float | None:
    """How well the router's scores rank judge errors (weighted ROC AUC), if measurable."""
    rows, wrong = judge_errors(comparisons)
    if len(rows) < MIN_HELD_OUT or len(set(wrong.tolist())) < 2:
        return None
    scores, _ = router.score([comparisons[i] for i in rows])
    return float(roc_auc_score(wrong, scores, sample_weight=weight[rows]))


def fit_correction(
    design: np.ndarray,
    wrong: np.ndarray,
    weight: np.ndarray,
    prior_coef: np.ndarray,
    penalty: float,
) -> tuple[np.ndarray, float]:
    """Weighted logistic fit of ``a + s * design @ prior_coef + design @ delta`` with
    ``penalty / 2 * |delta|^2``; returns the equivalent ``(coef, intercept)``.

    The design is mostly one-hot bins (about a tenth non-zero), so the optimiser's many
    products with it run on a sparse copy."""
    offset = design @ prior_coef
    design = csr_matrix(design)
    y = wrong.astype(float)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, s, delta = theta[0], theta[1], theta[2:]
        z = a + s * offset + design @ delta
        residual = weight * (expit(z) - y)
        value = float(weight @ (np.logaddexp(0.0, z) - y * z)) + penalty / 2 * delta @ delta
        gradient = np.concatenate(
            [[residual.sum(), residual @ offset], design.T @ residual + penalty * delta]
        )
        return value, gradient

    start = np.zeros(design.shape[1] + 2)
    start[1] = 1.0
    theta = minimize(loss, start, jac=True, method="L-BFGS-B").x
    return theta[1] * prior_coef + theta[2:], float(theta[0])


def too_little(n_judged: int, wrong: np.ndarray, n_folds: int) -> str:
    """Why a refit could not measure a candidate, in plain words."""
    if n_judged < MIN_HELD_OUT:
        return f"only {n_judged} labelled tasks have a judge verdict ({MIN_HELD_OUT} needed)"
    if len(set(wrong.tolist())) < 2:
        always = "wrong" if wrong.all() else "right"
        return f"the judge was always {always} on the labelled tasks: nothing to learn yet"
    return "all labels come from one group of related tasks: nothing to hold out"


def log_loss_terms(wrong: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, logits) - wrong * logits


@dataclass
class Refitter:
    """Accumulates a campaign's labels (with propensities) and refits on demand.

    ``folds``: grouped cross-validation folds for choosing the penalty and for adoption;
    ``min_z``: how many standard errors (paired over labelled groups) the candidate's
    out-of-fold log-loss must beat the recalibrated prior's by.
    """

    prior_strength: float = 200.0
    held_out_share: float = 0.25
    seed: int = 0
    labelled: list[Comparison] = field(default_factory=list)
    propensities: list[float] = field(default_factory=list)
    seen: list[Comparison] = field(default_factory=list)
    folds: int = 5
    min_z: float = 1.0

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
        """Propose a router from all labels; adopt it if it measures better than the prior
        (and no worse than ``current``, default: the prior) on held-out labelled groups."""
        current = current or prior
        if not self.labelled:
            return RefitOutcome(current, False, {"n_labels": 0}, "there are no labels yet")
        if isinstance(prior.strategy, JudgeErrorStrategy):
            return self._refit_correction(prior, current)
        return self._refit_blend(prior, current)

    # -- judge-error routers: a penalised correction on top of the prior ------------------

    def _refit_correction(self, prior: Router, current: Router) -> RefitOutcome:
        quality: dict[str, Any] = {"n_labels": len(self.labelled), "method": "correction"}
        rows, wrong = judge_errors(self.labelled)
        labelled = [self.labelled[i] for i in rows]
        groups = np.array([c.group for c in labelled])
        n_folds = min(self.folds, len(set(groups.tolist())))
        if len(rows) < MIN_HELD_OUT or len(set(wrong.tolist())) < 2 or n_folds < 2:
            return RefitOutcome(current, False, quality, too_little(len(rows), wrong, n_folds))
        weight = self.weights()[rows]
        strategy = prior.strategy
        design = strategy._design(prior.featurizer.transform(labelled))
        penalties = [p * self.prior_strength for p in PENALTY_PER_LABEL]
        out_of_fold = {p: np.zeros(len(rows)) for p in (*penalties, RECALIBRATION_ONLY)}
        for fit_rows, held_rows in GroupKFold(n_folds).split(design, groups=groups):
            if len(set(wrong[fit_rows].tolist())) < 2:
                return RefitOutcome(
                    current,
                    False,
                    quality | {"error": "one outcome in a fold"},
                    "in one cross-validation fold the judge was always right (or always "
                    "wrong), so it cannot be measured yet",
                )
            for penalty, scores in out_of_fold.items():
                coef, intercept = fit_correction(
                    design[fit_rows], wrong[fit_rows], weight[fit_rows], strategy.coef_, penalty
                )
                scores[held_rows] = design[held_rows] @ coef + intercept
        _, group_of = np.unique(groups, return_inverse=True)

        def per_group_loss(penalty: float) -> np.ndarray:
            terms = weight * log_loss_terms(wrong, out_of_fold[penalty])
            return np.bincount(group_of, weights=terms)

        best = min(penalties, key=lambda p: per_group_loss(p).sum())
        gain = per_group_loss(RECALIBRATION_ONLY) - per_group_loss(best)
        z = float(gain.mean() / max(gain.std(ddof=1) / np.sqrt(len(gain)), 1e-12))
        candidate_auc = float(roc_auc_score(wrong, out_of_fold[best], sample_weight=weight))
        prior_auc = float(
            roc_auc_score(wrong, out_of_fold[RECALIBRATION_ONLY], sample_weight=weight)
        )
        current_scores, _ = current.score(labelled)
        current_auc = float(roc_auc_score(wrong, current_scores, sample_weight=weight))
        quality |= {
            "held_out_auc": candidate_auc,
            "prior_held_out_auc": prior_auc,
            "current_held_out_auc": current_auc,
            "log_loss_gain": float(gain.sum() / weight.sum()),
            "z": z,
            "penalty": best,
            "folds": n_folds,
        }
        coef, intercept = fit_correction(design, wrong, weight, strategy.coef_, best)
        candidate = prior.with_coefficients(coef, intercept, len(rows), self.seen or self.labelled)
        adopted = z >= self.min_z and candidate_auc >= max(prior_auc, current_auc)
        aucs = f"the prior recalibrated {prior_auc:.2f}, the router in use {current_auc:.2f}"
        if adopted:
            reason = (
                f"it ranks the judge's errors better on held-out labels (AUC {candidate_auc:.2f};"
                f" {aucs}) and its gain is {z:.1f} standard errors"
            )
        elif z < self.min_z:
            reason = (
                "the candidate's gain over the prior recalibrated is within noise "
                f"({z:.1f} standard errors, {self.min_z:.1f} needed)"
            )
        else:
            reason = f"the candidate's held-out AUC {candidate_auc:.2f} is below the best of {aucs}"
        return RefitOutcome(candidate if adopted else current, adopted, quality, reason, candidate)

    # -- other linear strategies: blend with the prior, one held-out split -----------------

    def _refit_blend(self, prior: Router, current: Router) -> RefitOutcome:
        weight = self.weights()
        groups = [c.group for c in self.labelled]
        quality: dict[str, Any] = {"n_labels": len(self.labelled), "method": "blend"}
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
        if candidate_auc is None or current_auc is None:
            reason = quality.get("error") or (
                "too few held-out labels (or the judge always right or always wrong on them) "
                "to measure the candidate"
            )
            return RefitOutcome(current, False, quality, reason, trial)
        if candidate_auc < current_auc:
            reason = (
                f"the candidate's held-out AUC {candidate_auc:.2f} is below the router in use's "
                f"{current_auc:.2f}"
            )
            return RefitOutcome(current, False, quality, reason, trial)
        router = prior.refit(self.labelled, self.prior_strength, weight, self.seen)
        reason = (
            f"it ranks the judge's errors at least as well on held-out labels (AUC "
            f"{candidate_auc:.2f}; the router in use {current_auc:.2f})"
        )
        return RefitOutcome(router, True, quality, reason, trial)
