"""Reasons a team lead can read: what a feature behind a routing score means, in words.

``describe(name, signals)`` turns a feature column (``judge_consistent=no``,
``len_diff::0.67-1.00``) into a sentence; the router appends the column name and its
contribution in brackets, for tools: ``the judge changed its answer when the order was
swapped [judge_consistent=no +0.654]``.
"""

from __future__ import annotations

import functools
import re

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.core.signals import JudgeSignals

LOW_CONFIDENCE = 0.75

FIXED: dict[str, str] = {
    "judge=tie": "the judges call it a tie",
    "judge=decisive": "the judges pick a side",
    "judge=failed": "the judge gave no usable answer",
    "judge=none": "no judge verdict",
    "judge_consistent=no": "the judge changed its answer when the order was swapped",
    "judge_consistent=yes": "the judge gave the same answer in both orders",
    "judge_strength<1": "the judge was not clear-cut in both orders",
    "judge_strength<=0.5": "the judge found it close (slightly better or tie)",
    "panel_overrules=yes": "the other judges outvote the primary judge",
    "judge_pick=longer": "the judge prefers the longer response",
    "judge_pick=shorter": "the judge prefers the shorter response",
    "judge_pick=same_length": "the responses are the same length",
    "judge_pick=tie": "the judge's tie",
    "multi_turn=yes": "a multi-turn conversation",
    "prompt_has_code=yes": "the prompt has code",
    "responses_have_code=yes": "the responses have code",
    "responses_have_lists=yes": "the responses have lists",
    "final_numbers_match=yes": "both responses end on the same number",
}

MEASURES: dict[str, str] = {
    "prompt_len": "prompt length",
    "shorter_len": "shorter response's length",
    "longer_len": "longer response's length",
    "len_diff": "length difference",
    "len_gap": "relative length gap",
    "rouge_1": "word overlap between the responses",
    "rouge_l": "sequence overlap between the responses",
    "cosine": "similarity of the responses",
    "entity_overlap": "shared names",
    "number_overlap": "shared numbers",
}
BIN_WORDS = ("low", "mid", "high")


def describe(name: str, signals: JudgeSignals | None = None) -> str:
    """A sentence for a feature column, with the comparison's own values where known."""
    if name == "judge_doubt":
        confidence = signals.confidence if signals else None
        if confidence is None:
            return "judge confidence"
        low = "low " if confidence < LOW_CONFIDENCE else ""
        return f"{low}judge confidence ({confidence:.2f})"
    if name == "panel_disagreement":
        return _panel(signals)
    if name in FIXED:
        return FIXED[name]
    measure, _, bin_range = name.partition("::")
    if bin_range and measure in MEASURES:
        return f"{_bin_word(bin_range)} {MEASURES[measure]} ({bin_range})"
    dimension, _, value = name.partition("=")
    if value:
        return f"{dimension.replace('_', ' ')}: {value.replace('_', ' ')}"
    return name


def reason(
    active: str | None, family: str, contribution: float, signals: JudgeSignals | None
) -> str:
    """One explanation: the feature in words, then ``[feature contribution]`` for tools
    (``active`` is the comparison's column in ``family``, None when it has none)."""
    if active in QUOTING:
        return f"{describe(active, signals)} [{active} {contribution:+.3f}]"
    return f"{_opening(active, family)}{contribution:+.3f}]"


QUOTING = frozenset({"judge_doubt", "panel_disagreement"})
"""The columns whose words quote a comparison's own values (``describe``)."""


@functools.lru_cache(maxsize=4096)
def _opening(active: str | None, family: str) -> str:
    """``reason`` up to its contribution, for a column whose words quote nothing."""
    words = describe(active) if active else f"no {describe(family)}"
    return f"{words} [{active or 'no ' + family} "


def _panel(signals: JudgeSignals | None) -> str:
    if signals is None or signals.panel_agreement is None:
        return "the other judges' votes"
    n, against = signals.panel_size, signals.panel_dissent
    label = "a tie" if signals.ai_label is Label.TIE else signals.ai_label
    if against == 0:
        split = " (some only in one order)" if signals.panel_agreement < 1 else ""
        return f"all {n} other judges agree on {label}{split}"
    return f"{against} of {n} other judges disagree with {label}"


def _bin_word(bin_range: str) -> str:
    low = float(re.split("-", bin_range)[0])
    return BIN_WORDS[min(int(low * len(BIN_WORDS) + 1e-9), len(BIN_WORDS) - 1)]
