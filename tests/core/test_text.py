"""Cheap text measures: lengths, overlaps and flags on hand-checkable examples."""

from __future__ import annotations

from collections import Counter

import pytest

from hyper_ls_backend.core.text import (
    SIMILARITY_TOKEN_LIMIT,
    cosine,
    entities,
    has_code,
    has_list,
    jaccard,
    measure_pair,
    rouge_1,
    rouge_l,
    words,
)

SENTENCE = "The quick brown fox jumps over the lazy dog in Paris in 1999."


def test_words_are_lowercased_word_tokens():
    assert words("Hello, World! It's 42.") == ["hello", "world", "it", "s", "42"]


def test_identical_texts_are_fully_similar():
    m = measure_pair("prompt", SENTENCE, SENTENCE)
    assert m.rouge_1 == pytest.approx(1.0)
    assert m.rouge_l == pytest.approx(1.0)
    assert m.cosine == pytest.approx(1.0)
    assert m.entity_overlap == pytest.approx(1.0)
    assert m.len_diff == 0
    assert m.len_gap == 0.0
    assert m.longer_side == "same"


def test_disjoint_texts_have_zero_similarity():
    m = measure_pair("prompt", "alpha beta gamma Paris", "delta epsilon London 7")
    assert m.rouge_1 == 0.0
    assert m.rouge_l == 0.0
    assert m.cosine == 0.0
    assert m.entity_overlap == 0.0


def test_rouge_1_is_unigram_f1():
    # overlap 2 of 3 tokens on each side: precision = recall = 2/3
    assert rouge_1(Counter(["a", "b", "c"]), Counter(["a", "b", "d"])) == pytest.approx(2 / 3)
    # repeated tokens count once per match: overlap 1, sizes 2 and 1 -> F1 = 2/3
    assert rouge_1(Counter(["x", "x"]), Counter(["x"])) == pytest.approx(2 / 3)


def test_rouge_l_uses_the_longest_common_subsequence():
    # LCS of a b c d / a c b d has length 3
    assert rouge_l(list("abcd"), list("acbd")) == pytest.approx(3 / 4)
    assert rouge_l(list("abc"), list("cba")) == pytest.approx(1 / 3)


def test_rouge_l_is_order_sensitive_where_rouge_1_is_not():
    m = measure_pair("p", "one two three four", "four three two one")
    assert m.rouge_1 == pytest.approx(1.0)
    assert m.rouge_l == pytest.approx(1 / 4)


def test_cosine_on_hand_checked_vectors():
    # {a:1, b:1} . {a:1, c:1} = 1; norms sqrt(2) each
    assert cosine(Counter(["a", "b"]), Counter(["a", "c"])) == pytest.approx(0.5)
    assert cosine(Counter(), Counter(["a"])) == 0.0


def test_entity_overlap_is_jaccard_of_capitalised_words():
    found = entities("Einstein moved to Berlin in 1914 with I and a few apples")
    assert {"Einstein", "Berlin"} <= found
    assert not found & {"moved", "apples", "I", "a"}
    # {Paris, London} vs {Paris, Tokyo}: 1 shared of 3
    m = measure_pair("p", "Paris and London", "Paris and Tokyo")
    assert m.entity_overlap == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 0.0


def test_lengths_count_words_of_prompt_and_responses():
    m = measure_pair("How are you?", " ".join(["w"] * 10), "a b c d")
    assert (m.prompt_len, m.shorter_len, m.longer_len, m.len_diff) == (3, 4, 10, 6)
    assert m.len_gap == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("len_a", "len_b", "side"),
    [(100, 96, "same"), (96, 100, "same"), (100, 95, "same"), (100, 94, "A"), (94, 100, "B")],
)
def test_longer_side_treats_5_percent_as_the_same_length(len_a, len_b, side):
    m = measure_pair("p", " ".join(["w"] * len_a), " ".join(["w"] * len_b))
    assert m.longer_side == side


def test_one_empty_response_is_measured_as_fully_different():
    m = measure_pair("p", "", "some answer here")
    assert (m.shorter_len, m.longer_len, m.len_gap, m.longer_side) == (0, 3, 1.0, "B")
    assert m.rouge_1 == m.rouge_l == m.cosine == 0.0


def test_similarity_only_reads_the_first_tokens_but_length_counts_all():
    head = " ".join(f"w{i}" for i in range(SIMILARITY_TOKEN_LIMIT))
    m = measure_pair("p", head + " tail one", head + " other ending words")
    assert m.rouge_1 == pytest.approx(1.0)
    assert m.longer_len == SIMILARITY_TOKEN_LIMIT + 3
    assert m.len_diff == 1


@pytest.mark.parametrize(
    "text",
    [
        "```python\nprint(1)\n```",
        "def main():",
        "#include <stdio.h>",
        "const f = (x) => x;",
        "intro\n    indented code",
    ],
)
def test_code_is_detected(text):
    assert has_code(text)


def test_plain_prose_is_not_code_or_a_list():
    prose = "A plain answer - with a dash, 3. numbers and * stars inside lines."
    assert not has_code(prose)
    assert not has_list(prose)


@pytest.mark.parametrize("text", ["- one\n- two", "* one", "intro\n1. first", "2) second", "• dot"])
def test_lists_are_detected_at_line_starts(text):
    assert has_list(text)


def test_flags_are_read_from_prompt_and_either_response():
    m = measure_pair("fix def f(): pass", "plain", "- item one\n- item two")
    assert m.prompt_has_code
    assert not m.responses_have_code
    assert m.responses_have_lists
    m = measure_pair("plain question", "```x```", "plain")
    assert (m.prompt_has_code, m.responses_have_code, m.responses_have_lists) == (
        False,
        True,
        False,
    )
