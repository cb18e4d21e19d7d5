"""What a comparison's judges say about their own reliability, whatever the judges are.

These signals predict judge errors across judges and datasets: a failed or tied verdict,
an answer that flips when the responses are swapped, a weak or unconfident answer, other
judges disagreeing. ``judge_signals`` reads them from a comparison's primary verdict and
panel; a signal nobody measured is ``None`` (absent), never a made-up value.

The label a campaign pre-fills (``ai_label``) is ``Comparison.judge_label``: the panel's
when there is one (``panel_label``), else the primary's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hyper_ls_backend.core.comparison import (
    ANSWER_STRENGTH,
    DRAW_TOLERANCE,
    Comparison,
    JudgeVerdict,
    Label,
    votes,
)


@dataclass(frozen=True)
class JudgeSignals:
    """A comparison's judge-reliability signals (see the module docstring)."""

    judged: bool
    """A judge was asked."""
    failed: bool
    """No judge gave a usable verdict."""
    ai_label: Label | None
    """The label that would be pre-filled."""
    primary_label: Label | None
    consistent: bool | None
    """The primary kept its answer when the order was swapped; None if not run both ways."""
    strength: float | None
    """Mean stated strength of the primary's 5-point order answers (clearly = 1, slightly =
    0.5, tie = 0); None when its answers were coarse."""
    confidence: float | None
    """The primary's confidence in its label, when it gave one."""
    panel_size: int
    """Other judges with a usable verdict."""
    panel_dissent: int
    """Other judges whose own label is not ``ai_label``."""
    panel_agreement: float | None
    """Share of the other judges' votes on ``ai_label``; None without a panel."""
    panel_overrules: bool | None
    """The panel's label differs from the primary's; None without a panel."""
    lean: Label | None
    """The side (A or B) the judges' votes favour, even when the label is a tie."""

    @property
    def tie(self) -> bool:
        return self.ai_label is Label.TIE

    @property
    def doubtful(self) -> bool:
        """A verdict never to pre-fill while a human can still take it."""
        return self.failed or self.consistent is False or self.confidence == 0.0


def lean(verdicts: Sequence[JudgeVerdict]) -> Label | None:
    """The decisive side with more votes, stated strengths breaking a draw; None if even."""
    weight = {Label.A: 0.0, Label.B: 0.0}
    strength = {Label.A: 0.0, Label.B: 0.0}
    for verdict in verdicts:
        for label, share in votes(verdict).items():
            if label in weight:
                weight[label] += share
        for answer in verdict.orders.answers() if verdict.orders else []:
            side = Label(answer[0]) if answer[0] in "AB" else None
            if side is not None and answer in ANSWER_STRENGTH:
                strength[side] += ANSWER_STRENGTH[answer]
    for measure in (weight, strength):
        if abs(measure[Label.A] - measure[Label.B]) > DRAW_TOLERANCE:
            return max(measure, key=measure.__getitem__)
    return None


def stated_strength(verdict: JudgeVerdict) -> float | None:
    answers = verdict.orders.answers() if verdict.orders else []
    if not answers or not all(a in ANSWER_STRENGTH for a in answers):
        return None
    return sum(ANSWER_STRENGTH[a] for a in answers) / len(answers)


UNJUDGED = JudgeSignals(False, False, None, None, None, None, None, 0, 0, None, None, None)
"""The signals of a comparison no judge was asked about (one instance: they are frozen)."""


def judge_signals(comparison: Comparison) -> JudgeSignals:
    primary = comparison.judge
    if primary is None:
        return UNJUDGED
    answered = [v for v in comparison.judges or [primary] if not v.failed]
    others = [v for v in comparison.panel if not v.failed]
    label = comparison.judge_label
    agreement = sum(votes(v).get(label, 0.0) for v in others) / len(others) if others else None
    return JudgeSignals(
        judged=True,
        failed=label is None,  # comparison.judge_failed, with a judge asked
        ai_label=label,
        primary_label=primary.label,
        consistent=primary.consistent,
        strength=stated_strength(primary),
        confidence=primary.confidence,
        panel_size=len(others),
        panel_dissent=sum(v.label != label for v in others),
        panel_agreement=agreement,
        panel_overrules=(label != primary.label) if others else None,
        lean=lean(answered),
    )
