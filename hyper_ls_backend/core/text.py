"""Cheap text measures of a comparison: lengths and how alike the two responses are.

Everything here needs no downloaded weights and runs in microseconds per comparison.
Similarity is computed on the first ``SIMILARITY_TOKEN_LIMIT`` tokens of each response: a
100k-word response is as "long" as it is, but comparing its tail adds time, not signal.
"""

from __future__ import annotations

import math
import operator
import re
import string
from collections import Counter, _count_elements
from collections.abc import Callable, Collection, Iterable
from itertools import compress
from typing import Any, NamedTuple

from rapidfuzz.distance import LCSseq

SIMILARITY_TOKEN_LIMIT = 2_000

# Every measure below runs its loops in C (str and bytes methods, regular expressions, map,
# filter, compress over builtins): a Python-level loop over a response's tokens would cost
# more than all of them together.

# Bytes, not str: the UTF-8 bytes of any character past ASCII are all >= 0x80, which the
# table leaves as they are, and ``bytes.translate`` looks each byte up in C, where
# ``str.translate`` calls the table for every character once a text is not pure ASCII.
_SEPARATORS = bytes(ord(" ") if chr(i) in string.punctuation else i for i in range(256))


def _separate(text: str) -> str:
    """``text`` with every ASCII punctuation character turned into a space."""
    # surrogatepass: a lone surrogate (JSON can carry one) survives the round trip
    encoded = text.encode("utf-8", "surrogatepass")
    return encoded.translate(_SEPARATORS).decode("utf-8", "surrogatepass")


def sublinear(count: int) -> float:
    return 1 + math.log(count) if count else 0.0


class _CountTable(dict[int, float]):
    """``function(count)`` for every count a response's first ``SIMILARITY_TOKEN_LIMIT``
    tokens can have, looked up in C; computed for a larger one."""

    def __init__(self, function: Callable[[int], float]) -> None:
        super().__init__((count, function(count)) for count in range(SIMILARITY_TOKEN_LIMIT + 1))
        self.function = function

    def __missing__(self, count: int) -> float:
        return self.function(count)


_SUBLINEAR = _CountTable(sublinear)
_SQUARED_SUBLINEAR = _CountTable(lambda count: sublinear(count) ** 2)
_NUMBER_REVERSED = re.compile(r"\d\d*(?:[.,]\d+)*-?")
r"""``-?\d+(?:[.,]\d+)*`` (a number, as in "-1,000.5") spelt backwards; it starts with
one digit so that the engine skips ahead to a digit in C."""
FINAL_ANSWER_CHARS = 300
"""Where a response's final number (its answer, in math and reasoning) is looked for."""
_CODE_MARKERS = ("```", "\n    ", "\n\t", "def ", "function ", "#include", "=>", "};")
_CODE = re.compile("|".join(map(re.escape, _CODE_MARKERS)))
_LIST = re.compile(r"[ \t]*(?:[-*•]|\d+[.)])[ \t]")
_LIST_ITEM = re.compile(r"\n" + _LIST.pattern)
"""A list item's line after the first: a literal newline first, which the engine finds
in C (``^`` with MULTILINE is tried at every character)."""
_CAPITALISED = re.compile(r"[^\s\x00-@\[-\x7f](?<!\S.)\S+")
"""Tokens of two or more characters whose first is A-Z or past ASCII: a superset of the
capitalised ones, found by skipping ahead (in C) to such a character; the lookbehind,
after it, checks that it starts a token."""
_FIRST = operator.itemgetter(0)


def words(text: str) -> list[str]:
    """Lower-cased tokens split on whitespace and ASCII punctuation."""
    return _separate(text.lower()).split()


def f1(overlap: float, size_a: float, size_b: float) -> float:
    if overlap <= 0 or size_a <= 0 or size_b <= 0:
        return 0.0
    precision, recall = overlap / size_a, overlap / size_b
    return 2 * precision * recall / (precision + recall)


def unigram_similarities(
    counts_a: Counter[str], counts_b: Counter[str], sizes: tuple[int, int] | None = None
) -> tuple[float, float]:
    """ROUGE-1 F1 and the cosine of sublinear term-frequency vectors, in one pass over the
    tokens both responses have (``rouge_1`` and ``cosine``). ``sizes``: the counts' totals,
    when the caller knows them (the lengths of the token lists counted).

    The dot product adds its terms in the order of the set of shared tokens, as it always
    has, so its value is the same as before to the last bit; that order, and so that bit,
    depends on the process's string hash seed.
    """
    if not counts_a or not counts_b:
        return 0.0, 0.0
    shared = counts_a.keys() & counts_b.keys()
    shared_a, shared_b = _lookup(counts_a, shared), _lookup(counts_b, shared)
    # sum of min(a, b) = (sum of a + sum of b - sum of |a - b|) / 2, without a call to min
    differences = sum(map(abs, map(operator.sub, shared_a, shared_b)))
    overlap = (sum(shared_a) + sum(shared_b) - differences) // 2
    terms = map(operator.mul, _lookup(_SUBLINEAR, shared_a), _lookup(_SUBLINEAR, shared_b))
    norms = _squared_norm(counts_a) * _squared_norm(counts_b)
    size_a, size_b = sizes or (counts_a.total(), counts_b.total())
    return f1(overlap, size_a, size_b), sum(terms) / math.sqrt(norms)


def _lookup(table: Any, keys: Collection[Any]) -> tuple[Any, ...]:
    """``tuple(table[k] for k in keys)`` in one C call (``itemgetter`` with many keys)."""
    if len(keys) > 1:
        return operator.itemgetter(*keys)(table)
    return tuple(table[key] for key in keys)


def rouge_1(counts_a: Counter[str], counts_b: Counter[str]) -> float:
    """ROUGE-1 F1: unigram overlap of the two responses."""
    return unigram_similarities(counts_a, counts_b)[0]


def cosine(counts_a: Counter[str], counts_b: Counter[str]) -> float:
    """Cosine of sublinear term-frequency vectors (a vector-space similarity)."""
    return unigram_similarities(counts_a, counts_b)[1]


def rouge_l(tokens_a: list[str], tokens_b: list[str]) -> float:
    """ROUGE-L F1: longest common subsequence of the two token lists."""
    return f1(LCSseq.similarity(tokens_a, tokens_b), len(tokens_a), len(tokens_b))


def _squared_norm(counts: Counter[str]) -> float:
    # Most counts repeat (1, 1, 1, 2...): weigh each distinct count once, in the order
    # ``Counter(counts.values())`` has them (the terms' order fixes the sum's last bit).
    frequencies = _counts(counts.values())
    return sum(map(operator.mul, frequencies.values(), _lookup(_SQUARED_SUBLINEAR, frequencies)))


def _counts(items: Iterable[Any]) -> Counter[Any]:
    """``Counter(items)``, without its constructor's checks (``Counter.update`` counts an
    iterable that is not a mapping with this same C helper)."""
    counts: Counter[Any] = Counter()
    _count_elements(counts, items)
    return counts


def jaccard(set_a: set[str], set_b: set[str]) -> float:
    union = set_a | set_b
    return len(set_a & set_b) / len(union) if union else 0.0


SIMILARITY_CHAR_LIMIT = SIMILARITY_TOKEN_LIMIT * 8


def entities(text: str) -> set[str]:
    """Entity-like tokens: capitalised words (a cheap stand-in for NER), case kept."""
    candidates = _CAPITALISED.findall(_separate(text[:SIMILARITY_CHAR_LIMIT]))
    return set(compress(candidates, map(str.isupper, map(_FIRST, candidates))))


def numbers(tokens: Iterable[str]) -> set[str]:
    """The tokens made of digits (pass a ``Counter``: each distinct token is tried once)."""
    return set(filter(str.isdigit, tokens))


def final_number(text: str) -> str | None:
    r"""The last number of the text's last ``FINAL_ANSWER_CHARS`` characters, as
    ``re.findall(r"-?\d+(?:[.,]\d+)*", tail)[-1]`` finds it.

    Found from the end: every digit is in some match, matches end on a digit and take the
    longest chain of digits and single separators, so the last match is the chain that
    ends on the tail's last digit, with the ``-`` before it (no match ends on a ``-``).
    """
    found = _NUMBER_REVERSED.search(text[-FINAL_ANSWER_CHARS:][::-1])
    return found[0][::-1] if found else None


def has_code(text: str) -> bool:
    return _CODE.search(text) is not None


def has_list(text: str) -> bool:
    """A line that starts as a list item does ("- ", "* ", "• ", "1. ", "2) ")."""
    return _LIST.match(text) is not None or _LIST_ITEM.search(text) is not None


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


def _head(tokens: list[str]) -> list[str]:
    """The first ``SIMILARITY_TOKEN_LIMIT`` tokens (the list itself when it is no longer)."""
    return tokens[:SIMILARITY_TOKEN_LIMIT] if len(tokens) > SIMILARITY_TOKEN_LIMIT else tokens


def measure_pair(prompt: str, response_a: str, response_b: str) -> PairMeasures:
    tokens_a, tokens_b = words(response_a), words(response_b)
    len_a, len_b = len(tokens_a), len(tokens_b)
    head_a, head_b = _head(tokens_a), _head(tokens_b)
    counts_a, counts_b = _counts(head_a), _counts(head_b)
    longer = max(len_a, len_b)
    gap = abs(len_a - len_b) / longer if longer else 0.0
    final_a = final_number(response_a)
    overlap, similarity = unigram_similarities(counts_a, counts_b, (len(head_a), len(head_b)))
    longer_side = "same" if gap <= SAME_LENGTH_TOLERANCE else ("A" if len_a > len_b else "B")
    return PairMeasures(
        prompt_len=len(words(prompt)),
        shorter_len=min(len_a, len_b),
        longer_len=longer,
        len_diff=abs(len_a - len_b),
        len_gap=gap,
        rouge_1=overlap,
        rouge_l=rouge_l(head_a, head_b),
        cosine=similarity,
        entity_overlap=jaccard(entities(response_a), entities(response_b)),
        number_overlap=jaccard(numbers(counts_a), numbers(counts_b)),
        final_numbers_match=final_a is not None and final_a == final_number(response_b),
        longer_side=longer_side,
        prompt_has_code=has_code(prompt),
        responses_have_code=has_code(response_a) or has_code(response_b),
        responses_have_lists=has_list(response_a) or has_list(response_b),
    )
