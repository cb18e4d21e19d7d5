"""The text measures are the ones the shipped prior was fitted on, value for value.

``core/text.py`` computes them with C-level operations for speed; ``Reference`` below is
the straightforward Python they replaced (kept here only), and every measure of a few
hundred varied random comparisons (unicode, numbers such as "1,000.5" and "-3", code,
lists, empty and over-long texts) must equal it exactly, to the last bit of every float.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter

import pytest

from hyper_ls_backend.core import text
from hyper_ls_backend.core.text import PairMeasures, measure_pair


class Reference:
    """The text measures as they were written before they were made fast."""

    separators = "".join(" " if chr(i) in string.punctuation else chr(i) for i in range(256))
    number = re.compile(r"-?\d+(?:[.,]\d+)*")
    code_markers = ("```", "\n    ", "\n\t", "def ", "function ", "#include", "=>", "};")
    list_item = re.compile(r"^[ \t]*(?:[-*•]|\d+[.)])[ \t]", re.MULTILINE)

    @classmethod
    def words(cls, value: str) -> list[str]:
        return value.lower().translate(cls.separators).split()

    @staticmethod
    def f1(overlap: float, size_a: float, size_b: float) -> float:
        if overlap <= 0 or size_a <= 0 or size_b <= 0:
            return 0.0
        precision, recall = overlap / size_a, overlap / size_b
        return 2 * precision * recall / (precision + recall)

    @classmethod
    def rouge_1(cls, counts_a: Counter[str], counts_b: Counter[str]) -> float:
        overlap = sum(min(counts_a[t], counts_b[t]) for t in counts_a.keys() & counts_b.keys())
        return cls.f1(overlap, counts_a.total(), counts_b.total())

    @classmethod
    def cosine(cls, counts_a: Counter[str], counts_b: Counter[str]) -> float:
        def sublinear(count: int) -> float:
            return 1 + math.log(count)

        def squared_norm(counts: Counter[str]) -> float:
            return sum(n * sublinear(c) ** 2 for c, n in Counter(counts.values()).items())

        if not counts_a or not counts_b:
            return 0.0
        common = counts_a.keys() & counts_b.keys()
        dot = sum(sublinear(counts_a[t]) * sublinear(counts_b[t]) for t in common)
        return dot / math.sqrt(squared_norm(counts_a) * squared_norm(counts_b))

    @classmethod
    def entities(cls, value: str) -> set[str]:
        tokens = value[: text.SIMILARITY_CHAR_LIMIT].translate(cls.separators).split()
        return {t for t in tokens if len(t) > 1 and t[0].isupper()}

    @classmethod
    def final_number(cls, value: str) -> str | None:
        found = cls.number.findall(value[-text.FINAL_ANSWER_CHARS :])
        return found[-1] if found else None

    @classmethod
    def has_code(cls, value: str) -> bool:
        return any(marker in value for marker in cls.code_markers)

    @classmethod
    def has_list(cls, value: str) -> bool:
        return cls.list_item.search(value) is not None

    @classmethod
    def measure_pair(cls, prompt: str, response_a: str, response_b: str) -> PairMeasures:
        from rapidfuzz.distance import LCSseq

        limit = text.SIMILARITY_TOKEN_LIMIT
        tokens_a, tokens_b = cls.words(response_a), cls.words(response_b)
        len_a, len_b = len(tokens_a), len(tokens_b)
        head_a, head_b = tokens_a[:limit], tokens_b[:limit]
        counts_a, counts_b = Counter(head_a), Counter(head_b)
        longer = max(len_a, len_b)
        gap = abs(len_a - len_b) / longer if longer else 0.0
        final_a = cls.final_number(response_a)
        entities_a, entities_b = cls.entities(response_a), cls.entities(response_b)
        numbers_a = {t for t in head_a if t.isdigit()}
        numbers_b = {t for t in head_b if t.isdigit()}

        def jaccard(set_a: set[str], set_b: set[str]) -> float:
            union = set_a | set_b
            return len(set_a & set_b) / len(union) if union else 0.0

        return PairMeasures(
            prompt_len=len(cls.words(prompt)),
            shorter_len=min(len_a, len_b),
            longer_len=longer,
            len_diff=abs(len_a - len_b),
            len_gap=gap,
            rouge_1=cls.rouge_1(counts_a, counts_b),
            rouge_l=cls.f1(LCSseq.similarity(head_a, head_b), len(head_a), len(head_b)),
            cosine=cls.cosine(counts_a, counts_b),
            entity_overlap=jaccard(entities_a, entities_b),
            number_overlap=jaccard(numbers_a, numbers_b),
            final_numbers_match=final_a is not None and final_a == cls.final_number(response_b),
            longer_side="same" if gap <= 0.05 else ("A" if len_a > len_b else "B"),
            prompt_has_code=cls.has_code(prompt),
            responses_have_code=cls.has_code(response_a) or cls.has_code(response_b),
            responses_have_lists=cls.has_list(response_a) or cls.has_list(response_b),
        )


WORDS = (
    # capitalised or not, ASCII or not (a Greek capital sigma, a mathematical bold A)
    "the a of Paris London I A x Einstein NASA iPhone McDonald O'Neil don't e-mail "
    "Ärger ÉCOLE straße Σίσυφος \u0391\u03a3'\u0391 Ⓐbc \U0001d400lpha ǅemal İstanbul µs ﬁne"
)
NUMBERS = "1,000.5 -3 3.14 --2 1..2 ٣٤ ² 1e5 5-3 -.5 10,000,000 0 007 42 1. .5 -0 12,34.56"
PUNCTUATION = "( ) , . ! ? ; : ' \" - * • # _ ~ ` {} [] <> / \\ | => }; ```"
PIECES = [
    *WORDS.split(),
    *NUMBERS.split(),
    *PUNCTUATION.split(),
    "中文字符",
    "日本語のテキスト",
    "Привет",
    "😀",
    "\ud800",
    "\ud83d\ude00",
    "é",
    "def f():",
    "function g() {",
    "#include <stdio.h>",
    "\n    return x",
    "\n\tpass",
    "\n- item",
    "\n1. first",
    "\n  * starred",
    "\n• bullet",
    "\n2) second",
    "\n-not-a-list",
    "\n10.x",
]
GAPS = [" ", " ", " ", "", "\n", "\t", "\xa0", "\u2003", "\x1c", "\u3000", "\r\n", "\n\n", "  "]


def random_text(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.05:
        return ""
    size = rng.choice([1, 3, 10, 40, 150, 400]) if shape < 0.95 else rng.randint(2_100, 3_000)
    parts = []
    for _ in range(size):
        parts.append(rng.choice(PIECES))
        parts.append(rng.choice(GAPS))
    return "".join(parts[: rng.randint(0, len(parts))] if rng.random() < 0.3 else parts)


def related(rng: random.Random, value: str) -> str:
    """A response that shares some of ``value``'s words, in another order."""
    tokens = value.split(" ")
    rng.shuffle(tokens)
    return " ".join(tokens[: rng.randint(0, len(tokens))]) + rng.choice(["", " 42", " -3."])


def random_pairs(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        a = random_text(rng)
        b = related(rng, a) if rng.random() < 0.5 else random_text(rng)
        pairs.append((random_text(rng), a, b))
    return pairs


FIXED_TEXTS = [
    "",
    " ",
    "\n",
    "Paris",
    "The answer is 1,000.5",
    "so x = -3",
    "1. one\n2. two",
    "- a\n- b",
    "```python\nprint(1)\n```",
    "\u0391\u03a3'\u0391 \u0391\u03a3.",
    "ends with a separator 1,000.",
    "\ud800 lone",
]


@pytest.mark.parametrize("seed", [0, 1])
def test_measures_equal_the_reference_on_varied_texts(seed):
    pairs = random_pairs(200, seed) + [(a, a, b) for a in FIXED_TEXTS for b in FIXED_TEXTS]
    for prompt, a, b in pairs:
        assert measure_pair(prompt, a, b) == Reference.measure_pair(prompt, a, b), (prompt, a, b)


def test_each_measure_equals_the_reference():
    rng = random.Random(2)
    values = FIXED_TEXTS + [random_text(rng) for _ in range(300)]
    for value in values:
        assert text.words(value) == Reference.words(value)
        assert text.entities(value) == Reference.entities(value)
        assert text.final_number(value) == Reference.final_number(value)
        assert text.has_code(value) == Reference.has_code(value)
        assert text.has_list(value) == Reference.has_list(value)
        head = Counter(text.words(value)[: text.SIMILARITY_TOKEN_LIMIT])
        assert text.numbers(head) == {t for t in head if t.isdigit()}


def test_final_number_equals_the_reference_on_number_runs():
    """Numbers packed together, where left-to-right and right-to-left could disagree."""
    rng = random.Random(3)
    for _ in range(3_000):
        value = "".join(rng.choice("0123456789٣.,.,--a \n") for _ in range(rng.randint(0, 20)))
        assert text.final_number(value) == Reference.final_number(value), value
    assert text.final_number("x " * 200 + "is -1,000.5.") == "-1,000.5"


def test_similarities_equal_the_reference_past_the_token_limit():
    """Counts larger than a response's first tokens can have (the public functions take
    any counts)."""
    counts_a, counts_b = Counter({"a": 5_000, "b": 1, "c": 2}), Counter({"a": 3_000, "c": 7})
    assert text.rouge_1(counts_a, counts_b) == Reference.rouge_1(counts_a, counts_b)
    assert text.cosine(counts_a, counts_b) == Reference.cosine(counts_a, counts_b)
