"""A calibration sample for the agreement guarantee, from human-labelled comparisons.

Each comparison the judge answered counts once, with the judge's label (what would be
pre-filled) against **one** of its human labels: the guarantee is about agreeing with a
single human, as an audit has one. With several human labels, one is drawn per comparison
by a fixed draw on its id, so a rerun draws the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.guarantee import AgreementGuarantee
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.signals import judge_signals
from hyper_ls_backend.core.strategies import stable_uniform

HUMAN_DRAW_SEED = 11


def agreement_with_one_human(comparisons: Sequence[Comparison]) -> np.ndarray:
    """1.0 where the judge's label agrees with the drawn human label, else 0.0; every
    comparison must have a judge label and a human label (see ``usable``)."""
    draws = stable_uniform([c.id for c in comparisons], HUMAN_DRAW_SEED)
    agree = []
    for comparison, draw in zip(comparisons, draws, strict=True):
        human = comparison.human[int(draw * len(comparison.human))]
        agree.append(float(judge_signals(comparison).ai_label == human))
    return np.asarray(agree)


def usable(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons that can calibrate: a human label, and a judge label to compare."""
    return [c for c in comparisons if c.human and judge_signals(c).ai_label is not None]


def certify(
    router: Router,
    comparisons: Sequence[Comparison],
    target_agreement: float,
    confidence: float,
    weights: Sequence[float] | None = None,
) -> AgreementGuarantee:
    """Fit the guarantee on ``comparisons`` (already ``usable``), scored by ``router``."""
    scores, _ = router.score(comparisons)
    return AgreementGuarantee(target_agreement, confidence).fit(
        scores, agreement_with_one_human(comparisons), weights
    )
