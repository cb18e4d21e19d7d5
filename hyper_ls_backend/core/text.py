"""Cheap text measures of a comparison: lengths and how alike the two responses are.

Everything here needs no downloaded weights and runs in microseconds per comparison.
Similarity is computed on the first ``SIMILARITY_TOKEN_LIMIT`` tokens of each response: a
100k-word response is as "long" as it is, but comparing its tail adds time, not signal.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from rapidfuzz.distance import LCSseq

SIMILARITY_TOKEN_LIMIT = 2_000

_WORD = re.compile(r"\w+")
# Entity-like tokens: capitalised words and numbers (a cheap stand-in for NER).
_ENTITY = re.compile(r"\b(?:[A-Z][a-zA-Z]+|\d+(?:[.,]\d+)?)\b")
_CODE_MARKERS = ("```", "\n    ", "\n\t", "def ", "function ", "#include", "=>", "};")
_LIST = re.compile(r"^[ \t]*(?:[-*•]|\d+[.)])[ \t]", re.MULTILINE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def f1(overlap: float, size_a: float, size_b: float) -> float:
    if overlap <= 0 or size_a <= 0 or size_b <= 0:
        return 0.0
    precision, recall = overlap / size_a, overlap / size_b
    return 2 * precision * recall / (precision + recall)


def rouge_1(counts_a: Counter[str], counts_b: Counter[str]) -> float:
    """ROUGE-1 F1: unigram overlap of the two responses."""
    overlap = sum((counts_a & counts_b).values())
    return f1(overlap, counts_a.total(), counts_b.total())


def rouge_l(tokens_a: list[str], tokens_b: list[str]) -> float:
    """ROUGE-L F1: longest common subsequence of the two token lists."""
    return f1(LCSseq.similarity(tokens_a, tokens_b), len(tokens_a), len(tokens_b))


def cosine(counts_a: Counter[str], counts_b: Counter[str]) -> float:
    """Cosine of sublinear term-frequency vectors (a vector-space similarity)."""
    if not counts_a or not counts_b:
        return 0.0
    weight_a = {t: 1 + math.log(c) for t, c in counts_a.items()}
    weight_b = {t: 1 + math.log(c) for t, c in counts_b.items()}
    dot = sum(w * weight_b[t] for t, w in weight_a.items() if t in weight_b)
    norm = math.sqrt(sum(w * w for w in weight_a.values()) * sum(w * w for w in weight_b.values()))
    return dot / norm


def jaccard(set_a: set[str], set_b: set[str]) -> float:
    union = set_a | set_b
    return len(set_a & set_b) / len(union) if union else 0.0


def entities(text: str) -> set[str]:
    return set(_ENTITY.findall(text[: SIMILARITY_TOKEN_LIMIT * 8]))


def has_code(text: str) -> bool:
    return any(marker in text for marker in _CODE_MARKERS)


def has_list(text: str) -> bool:
    return _LIST.search(text) is not None


@dataclass(frozen=True)
class PairMeasures:
    """Raw measures of one comparison, before ranking and binning."""

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
        longer_side=longer_side,
        prompt_has_code=has_code(prompt),
        responses_have_code=has_code(response_a) or has_code(response_b),
        responses_have_lists=has_list(response_a) or has_list(response_b),
    )
