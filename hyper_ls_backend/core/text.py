"""Cheap text measures of a comparison: lengths and how alike the two responses are.

Everything here needs no downloaded weights and runs in microseconds per comparison.
Similarity is computed on the first ``SIMILARITY_TOKEN_LIMIT`` tokens of each response: a
100k-word response is as "long" as it is, but comparing its tail adds time, not signal.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import NamedTuple

from rapidfuzz.distance import LCSseq

SIMILARITY_TOKEN_LIMIT = 2_000

# A 256-character table, not a dict: str.translate takes its fast path (characters past
# 255 are left as they are). ASCII punctuation becomes a space.
_SEPARATORS = "".join(" " if chr(i) in string.punctuation else chr(i) for i in range(256))
_SUBLINEAR = [0.0] + [1 + math.log(count) for count in range(1, 256)]
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")
FINAL_ANSWER_CHARS = 300
"""Where a response's final number (its answer, in math and reasoning) is looked for."""
_CODE_MARKERS = ("```", "\n    ", "\n\t", "def ", "function ", "#include", "=>", "};")
_LIST = re.compile(r"^[ \t]*(?:[-*•]|\d+[.)])[ \t]", re.MULTILINE)


def words(text: str) -> list[str]:
    """Lower-cased tokens split on whitespace and ASCII punctuation (fast: C-level only)."""
    return text.lower().translate(_SEPARATORS).split()


def f1(overlap: float, size_a: float, size_b: float) -> float:
    if overlap <= 0 or size_a <= 0 or size_b <= 0:
        return 0.0
    precision, recall = overlap / size_a, overlap / size_b
    return 2 * precision * recall / (precision + recall)


def rouge_1(counts_a: Counter[str], counts_b: Counter[str]) -> float:
    """ROUGE-1 F1: unigram overlap of the two responses."""
    overlap = sum(min(counts_a[t], counts_b[t]) for t in counts_a.keys() & counts_b.keys())
    return f1(overlap, counts_a.total(), counts_b.total())


def rouge_l(tokens_a: list[str], tokens_b: list[str]) -> float:
    """ROUGE-L F1: longest common subsequence of the two token lists."""
    return f1(LCSseq.similarity(tokens_a, tokens_b), len(tokens_a), len(tokens_b))


def sublinear(count: int) -> float:
    return _SUBLINEAR[count] if count < len(_SUBLINEAR) else 1 + math.log(count)


def _squared_norm(counts: Counter[str]) -> float:
    # Most counts repeat (1, 1, 1, 2...): weigh each distinct count once.
    return sum(n * sublinear(c) ** 2 for c, n in Counter(counts.values()).items())


def cosine(counts_a: Counter[str], counts_b: Counter[str]) -> float:
    """Cosine of sublinear term-frequency vectors (a vector-space similarity)."""
    if not counts_a or not counts_b:
        return 0.0
    common = counts_a.keys() & counts_b.keys()
    dot = sum(sublinear(counts_a[t]) * sublinear(counts_b[t]) for t in common)
    return dot / math.sqrt(_squared_norm(counts_a) * _squared_norm(counts_b))


def jaccard(set_a: set[str], set_b: set[str]) -> float:
    union = set_a | set_b
    return len(set_a & set_b) / len(union) if union else 0.0


SIMILARITY_CHAR_LIMIT = SIMILARITY_TOKEN_LIMIT * 8


def entities(text: str) -> set[str]:
    """Entity-like tokens: capitalised words (a cheap stand-in for NER)."""
    tokens = text[:SIMILARITY_CHAR_LIMIT].translate(_SEPARATORS).split()
    return {t for t in tokens if len(t) > 1 and t[0].isupper()}


def numbers(tokens: list[str]) -> set[str]:
    return {t for t in tokens if t.isdigit()}


def final_number(text: str) -> str | None:
    found = _NUMBER.findall(text[-FINAL_ANSWER_CHARS:])
    return found[-1] if found else None


def has_code(text: str) -> bool:
    return any(marker in text for marker in _CODE_MARKERS)


def has_list(text: str) -> bool:
    return _LIST.search(text) is not None


class PairMeasures(NamedTuple):
    """Raw measures of one comparison, before ranking and binning (a named tuple: it
    crosses process boundaries when texts are measured in parallel, and pickles cheaply)."""

    prompt_len: int
    shorter_len: int
    longer_len: int
    len_diff: int
    len_gap: float
    """Relative length difference, |a - b| / max(a, b), in [0, 1]."""
    rouge_1: float
    rouge_l: float
    cosine: float
    entity_overlap: float
    number_overlap: float
    """Jaccard overlap of the numbers in the two responses (0 when neither has any)."""
    final_numbers_match: bool
    """Both responses end on the same number: often the same final answer."""
    longer_side: str
    """"A", "B" or "same": which response is longer (within 5%)."""
    prompt_has_code: bool
    responses_have_code: bool
    responses_have_lists: bool


SAME_LENGTH_TOLERANCE = 0.05


def measure_pair(prompt: str, response_a: str, response_b: str) -> PairMeasures:
    tokens_a, tokens_b = words(response_a), words(response_b)
    len_a, len_b = len(tokens_a), len(tokens_b)
    head_a, head_b = tokens_a[:SIMILARITY_TOKEN_LIMIT], tokens_b[:SIMILARITY_TOKEN_LIMIT]
    counts_a, counts_b = Counter(head_a), Counter(head_b)
    longer = max(len_a, len_b)
    gap = abs(len_a - len_b) / longer if longer else 0.0
    final_a = final_number(response_a)
    longer_side = "same" if gap <= SAME_LENGTH_TOLERANCE else ("A" if len_a > len_b else "B")
    return PairMeasures(
        prompt_len=len(words(prompt)),
        shorter_len=min(len_a, len_b),
        longer_len=longer,
        len_diff=abs(len_a - len_b),
        len_gap=gap,
        rouge_1=rouge_1(counts_a, counts_b),
        rouge_l=rouge_l(head_a, head_b),
        cosine=cosine(counts_a, counts_b),
        entity_overlap=jaccard(entities(response_a), entities(response_b)),
        number_overlap=jaccard(numbers(head_a), numbers(head_b)),
        final_numbers_match=final_a is not None and final_a == final_number(response_b),
        longer_side=longer_side,
        prompt_has_code=has_code(prompt),
        responses_have_code=has_code(response_a) or has_code(response_b),
        responses_have_lists=has_list(response_a) or has_list(response_b),
    )
