"""Does the agreement guarantee hold its promise on real data? (``simulate --target-agreement``)

Over many random splits by group, a ``calibration_share`` of the groups is the human-labelled
calibration sample (one human label drawn per comparison, as an audit would get) and the
rest is routed: the judge labels what scores at most the certified threshold. A split
*holds* when the realised agreement of that AI-labelled part (each comparison's share of
its human labels the judge's label agrees with: the chance a single human agrees) reaches
the target; a split that certifies nothing holds vacuously (everything goes to humans) and
is counted apart. The guarantee says at least ``confidence`` of the splits hold, up to the
noise of a finite routed part. The naive threshold (no bound) is measured alongside.

The router is fixed before any split (``--model``, default the shipped prior): its scores are
computed once per judge view, and a split only chooses which comparisons calibrate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta
from sklearn.model_selection import GroupShuffleSplit

from hyper_ls_backend.core.calibration import usable
from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.dataset import judge_views
from hyper_ls_backend.core.guarantee import AgreementGuarantee, naive_threshold
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.signals import judge_signals


@dataclass(frozen=True)
class ScoredView:
    """One judge view of a dataset, scored: what every split reads."""

    name: str
    scores: np.ndarray
    agreement: np.ndarray
    """Per comparison, the share of its human labels that agree with the judge's label."""
    humans: list[list[bool]]
    """Per comparison, whether each of its human labels agrees with the judge's label."""
    groups: np.ndarray


def score_views(comparisons: Sequence[Comparison], router: Router) -> list[ScoredView]:
    """Every judge view (each judge of a panel as the primary, with and without the others)
    of the comparisons that have human labels and a judge label."""
    views = []
    for name, view in judge_views(comparisons).items():
        kept = usable(view)
        labels = [judge_signals(c).ai_label for c in kept]
        humans = [[h == label for h in c.human] for c, label in zip(kept, labels, strict=True)]
        scores, _ = router.score(kept)
        views.append(
            ScoredView(
                name=name,
                scores=np.asarray(scores, dtype=float),
                agreement=np.array([np.mean(h) for h in humans]),
                humans=humans,
                groups=np.array([c.group for c in kept]),
            )
        )
    return views


def evaluate_guarantee(
    view: ScoredView,
    targets: Sequence[float],
    confidence: float = 0.9,
    splits: int = 100,
    calibration_share: float = 0.3,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> dict:
    """Per target: how often the guarantee and the naive threshold held, the AI share each
    allowed, and the realised agreement; plus the view's risk-coverage curve."""
    splitter = GroupShuffleSplit(n_splits=splits, train_size=calibration_share, random_state=seed)
    rng = np.random.default_rng(seed)
    outcomes: dict[float, dict[str, list]] = {
        t: {
            "held": [],
            "share": [],
            "agreement": [],
            "certified": [],
            "naive_held": [],
            "naive_share": [],
        }
        for t in targets
    }
    for calibration, routed in splitter.split(view.scores, groups=view.groups):
        # one human label per calibration comparison, as an audit gets
        agree = np.array([rng.choice(view.humans[i]) for i in calibration], dtype=float)
        for target in targets:
            record = outcomes[target]
            guarantee = AgreementGuarantee(target, confidence).fit(view.scores[calibration], agree)
            allowed = guarantee.allows(view.scores[routed])
            realised = _realised(view.agreement[routed], allowed)
            record["certified"].append(guarantee.threshold_ is not None)
            record["held"].append(realised is None or realised >= target)
            record["share"].append(float(allowed.mean()))
            record["agreement"].append(realised)
            naive = naive_threshold(view.scores[calibration], agree, target)
            naive_allowed = (
                view.scores[routed] <= naive if naive is not None else np.zeros(len(routed), bool)
            )
            naive_realised = _realised(view.agreement[routed], naive_allowed)
            record["naive_held"].append(naive_realised is None or naive_realised >= target)
            record["naive_share"].append(float(naive_allowed.mean()))
        if progress is not None:
            progress()
    return {
        "view": view.name,
        "n": len(view.scores),
        "targets": [_summary(target, outcomes[target], confidence) for target in targets],
        "curve": risk_coverage(view.scores, view.agreement),
    }


def _realised(agreement: np.ndarray, allowed: np.ndarray) -> float | None:
    return float(agreement[allowed].mean()) if allowed.any() else None


def _summary(target: float, record: dict[str, list], confidence: float) -> dict:
    realised = [a for a in record["agreement"] if a is not None]
    return {
        "target": target,
        "confidence": confidence,
        "splits": len(record["held"]),
        "held": _rate(record["held"]),
        "certified": float(np.mean(record["certified"])),
        "ai_share": _mean_sd(record["share"]),
        "agreement": _mean_sd(realised) if realised else None,
        "naive": {"held": _rate(record["naive_held"]), "ai_share": _mean_sd(record["naive_share"])},
    }


def _rate(flags: Sequence[bool]) -> dict[str, float | list[float]]:
    """A share of splits with its 95% Clopper-Pearson interval."""
    k, n = int(np.sum(flags)), len(flags)
    low = float(beta.ppf(0.025, k, n - k + 1)) if k > 0 else 0.0
    high = float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
    return {"rate": k / n, "ci95": [low, high]}


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values))}


def risk_coverage(scores: np.ndarray, agreement: np.ndarray, points: int = 50) -> list[dict]:
    """Agreement of the AI-labelled part against its share, the judge labelling the lowest
    scores first: what any threshold on this router can reach."""
    order = np.argsort(scores, kind="stable")
    running = np.cumsum(agreement[order]) / np.arange(1, len(order) + 1)
    cuts = np.unique(np.linspace(1, len(order), points).round().astype(int))
    return [{"share": c / len(order), "agreement": float(running[c - 1])} for c in cuts]
