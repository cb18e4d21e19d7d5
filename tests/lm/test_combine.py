"""How two answer orders become one verdict: label, consistency, confidence."""

from __future__ import annotations

import pytest

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.lm.judge import UNSWAP, JudgeCall, combine


def calls(*preferences: str | None) -> list[JudgeCall]:
    return [
        JudgeCall(swapped=i == 1, preference=p, error=None if p else "failed")
        for i, p in enumerate(preferences)
    ]


@pytest.mark.parametrize(
    ("first", "second", "label", "consistent", "confidence"),
    [
        ("A-is-clearly-better", "A-is-clearly-better", Label.A, True, 1.0),
        ("A-is-clearly-better", "A-is-slightly-better", Label.A, True, 0.875),
        ("B-is-slightly-better", "B-is-slightly-better", Label.B, True, 0.75),
        ("Tie", "Tie", Label.TIE, True, 0.75),
        ("A-is-clearly-better", "Tie", Label.TIE, False, 0.25),
        ("A-is-slightly-better", "Tie", Label.TIE, False, 0.125),
        ("A-is-clearly-better", "B-is-slightly-better", Label.TIE, False, 0.125),
        ("A-is-slightly-better", "B-is-slightly-better", Label.TIE, False, 0.0),
        ("B-is-clearly-better", "A-is-clearly-better", Label.TIE, False, 0.0),
        ("B-is-clearly-better", None, Label.B, None, 0.5),
        (None, "Tie", Label.TIE, None, 0.375),
    ],
)
def test_combined_verdict(
    first: str | None,
    second: str | None,
    label: Label,
    consistent: bool | None,
    confidence: float,
) -> None:
    verdict = combine(calls(first, second), "m")

    assert (verdict.label, verdict.consistent) == (label, consistent)
    assert verdict.confidence == pytest.approx(confidence)
    assert verdict.model == "m"


def test_no_answer_is_a_failed_verdict() -> None:
    verdict = combine(calls(None, None), "m")

    assert verdict.failed
    assert verdict.consistent is None and verdict.confidence is None


def test_consistent_verdicts_are_always_more_confident_than_inconsistent_ones() -> None:
    scale = list(UNSWAP)
    pairs = [(a, b) for a in scale for b in scale]
    verdicts = [combine(calls(a, b), "m") for a, b in pairs]
    agreed = [v.confidence for v in verdicts if v.consistent]
    disagreed = [v.confidence for v in verdicts if v.consistent is False]

    assert min(agreed) > max(disagreed)  # type: ignore[type-var]


def test_unswapping_mirrors_the_scale() -> None:
    assert all(UNSWAP[UNSWAP[p]] == p for p in UNSWAP)
    assert UNSWAP["A-is-slightly-better"] == "B-is-slightly-better"


def test_orders_keep_each_answer_in_the_rows_orientation() -> None:
    verdict = combine(calls("A-is-clearly-better", None), "m")

    assert verdict.orders is not None
    assert (verdict.orders.ab, verdict.orders.ba) == ("A-is-clearly-better", None)


def test_token_probabilities_replace_the_stated_strength_when_both_orders_have_them() -> None:
    first, second = calls("A-is-clearly-better", "B-is-slightly-better")
    masses = ({Label.A: 0.9, Label.B: 0.1}, {Label.B: 0.7, Label.A: 0.2, Label.TIE: 0.1})
    with_mass = [
        call.model_copy(update={"label_probabilities": mass})
        for call, mass in zip((first, second), masses, strict=True)
    ]

    verdict = combine(with_mass, "m")
    one_sided = combine([with_mass[0], second], "m")

    # the orders disagree: the label is a tie, and its probability is the mass on tie
    assert verdict.label is Label.TIE and verdict.consistent is False
    assert verdict.confidence == pytest.approx((0.0 + 0.1) / 2)
    assert one_sided.confidence == pytest.approx(0.125)  # the stated strengths
