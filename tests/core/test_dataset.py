"""Comparison validation and the JSONL reader: every bad line is named with its field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hyper_ls_backend.core.comparison import (
    FIVE_POINT_SCALE,
    MAX_TEXT_CHARS,
    Comparison,
    JudgeVerdict,
    Label,
    parse_label,
)
from hyper_ls_backend.core.dataset import (
    MAX_REPORTED_ERRORS,
    DatasetError,
    iter_comparisons,
    read_comparisons,
    write_jsonl,
)


def record(**fields: Any) -> dict[str, Any]:
    base = {"id": "r1", "prompt": "Which is better?", "response_a": "yes", "response_b": "no"}
    return {**base, **fields}


def without(field: str) -> dict[str, Any]:
    return {k: v for k, v in record().items() if k != field}


def lines(*records: Any) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in records]


VALID = json.dumps(record(id="first"))

BAD_LINES = [
    pytest.param('{"id": "x", "prompt": ', "not valid JSON", id="bad-json"),
    pytest.param('["a", "list"]', "expected a JSON object, got list", id="non-object"),
    pytest.param("42", "expected a JSON object, got int", id="number"),
    pytest.param(without("response_b"), "response_b: Field required", id="missing-response"),
    pytest.param(without("prompt"), "prompt: Field required", id="missing-prompt"),
    pytest.param(without("id"), "id: Field required", id="missing-id"),
    pytest.param(record(response_a=7), "response_a: must be a string, got int", id="int-text"),
    pytest.param(record(prompt=None), "prompt: must be a string", id="null-prompt"),
    pytest.param(
        record(response_a="", response_b="  "),
        "response_a and response_b are both empty",
        id="both-empty",
    ),
    pytest.param(record(human=["A", "maybe"]), "human.1: unknown label 'maybe'", id="human"),
    pytest.param(record(human="A"), "human", id="human-not-a-list"),
    pytest.param(record(gold="C"), "gold: unknown label 'C'", id="gold"),
    pytest.param(record(judge={"label": "both"}), "judge.label: unknown label", id="judge"),
    pytest.param(record(judge={"label": "A", "confidence": 2}), "judge.confidence", id="conf"),
    pytest.param(record(id=""), "id:", id="empty-id"),
    pytest.param(record(context_a="not a list"), "context_a", id="context"),
    pytest.param(
        record(response_b="x" * (MAX_TEXT_CHARS + 1)),
        "response_b: is 1,000,001 characters long (limit 1,000,000)",
        id="huge-response",
    ),
    pytest.param(
        record(prompt="x" * (MAX_TEXT_CHARS + 1)),
        "prompt: is 1,000,001 characters",
        id="huge-prompt",
    ),
]


@pytest.mark.parametrize(("bad", "message"), BAD_LINES)
def test_bad_line_is_reported_with_its_number_and_field(bad, message):
    with pytest.raises(DatasetError) as caught:
        list(iter_comparisons(lines(VALID, bad), source="input.jsonl"))
    text = str(caught.value)
    assert text.startswith("input.jsonl: 1 invalid line(s)")
    assert message in text
    assert caught.value.problems[0].startswith("line 2: ")
    assert message in caught.value.problems[0]


def test_duplicate_id_names_both_lines():
    with pytest.raises(DatasetError, match=r"line 3: duplicate id 'first' \(first on line 1\)"):
        list(iter_comparisons(lines(VALID, record(id="other"), record(id="first"))))


def test_integer_id_is_read_as_a_string_and_collides_with_its_string_form():
    assert next(iter_comparisons(lines(record(id=7)))).id == "7"
    with pytest.raises(DatasetError, match="line 2: duplicate id '7'"):
        list(iter_comparisons(lines(record(id=7), record(id="7"))))


def test_blank_lines_are_skipped_but_counted(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(VALID + "\n\n   \n" + json.dumps(without("prompt")) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        read_comparisons(path)
    assert str(caught.value).startswith(f"{path}: 1 invalid line(s)")
    assert caught.value.problems == ["line 4: prompt: Field required"]


def test_every_bad_line_is_listed_and_long_lists_are_cut(tmp_path):
    bad = [json.dumps(record(id=f"b{i}", gold="nope")) for i in range(MAX_REPORTED_ERRORS + 5)]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([VALID, *bad]) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        read_comparisons(path)
    assert len(caught.value.problems) == MAX_REPORTED_ERRORS + 5
    assert caught.value.problems[-1].startswith(f"line {MAX_REPORTED_ERRORS + 6}: gold:")
    assert "... and 5 more" in str(caught.value)


def test_valid_rows_before_a_bad_one_are_yielded_then_the_error_raised():
    reader = iter_comparisons(lines(VALID, "{oops"))
    assert next(reader).id == "first"
    with pytest.raises(DatasetError, match="line 2: not valid JSON"):
        next(reader)


def test_one_empty_response_is_allowed():
    comparison = next(iter_comparisons(lines(record(response_a=""))))
    assert comparison.response_a == ""


def test_a_pair_without_a_prompt_is_read():
    """Two texts compared on their own (Label Studio's "Pairwise classification")."""
    (comparison,) = iter_comparisons([json.dumps(record(prompt=""))])
    assert comparison.prompt == ""


def test_text_of_exactly_the_limit_is_accepted():
    comparison = Comparison.model_validate(record(response_a="x" * MAX_TEXT_CHARS))
    assert len(comparison.response_a) == MAX_TEXT_CHARS


def test_drop_labels_ignores_even_invalid_human_and_gold():
    bad_labels = record(human=["not-a-label"], gold=17)
    with pytest.raises(DatasetError):
        list(iter_comparisons(lines(bad_labels)))
    (comparison,) = iter_comparisons(lines(bad_labels), drop_labels=True)
    assert comparison.human == []
    assert comparison.gold is None


def test_read_and_write_round_trip(tmp_path):
    records = [record(id=f"r{i}", human=["A", "tie"], judge={"label": "B"}) for i in range(3)]
    path = tmp_path / "out.jsonl"
    assert write_jsonl(path, records) == 3
    read = read_comparisons(path)
    assert [c.id for c in read] == ["r0", "r1", "r2"]
    assert read[0].human == [Label.A, Label.TIE]
    assert read[0].judge_label is Label.B


@pytest.mark.parametrize(("name", "label"), sorted(FIVE_POINT_SCALE.items()))
def test_five_point_multipref_labels_map_to_coarse_labels(name, label):
    comparison = Comparison.model_validate(record(human=[name], gold=name, judge={"label": name}))
    assert comparison.human == [label]
    assert comparison.gold is label
    assert comparison.judge_label is label


def test_five_point_scale_mapping():
    assert parse_label("A-is-clearly-better") is Label.A
    assert parse_label("A-is-slightly-better") is Label.A
    assert parse_label("Tie") is Label.TIE
    assert parse_label("B-is-slightly-better") is Label.B
    assert parse_label("B-is-clearly-better") is Label.B


@pytest.mark.parametrize(("raw", "label"), [("a", Label.A), (" B ", Label.B), ("TIE", Label.TIE)])
def test_coarse_labels_are_case_and_space_insensitive(raw, label):
    assert parse_label(raw) is label


@pytest.mark.parametrize("raw", ["C", "", "A-is-better", 1, None])
def test_unknown_labels_are_rejected(raw):
    with pytest.raises(ValueError, match="unknown label"):
        parse_label(raw)


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ([], None),
        (["A"], Label.A),
        (["B", "B", "A"], Label.B),
        (["A", "B"], Label.TIE),
        (["A", "B", "tie"], Label.TIE),
        (["A", "A", "B", "B", "tie"], Label.TIE),
        (["tie", "tie", "A"], Label.TIE),
        (["B", "A", "A", "tie"], Label.A),
    ],
)
def test_reference_label_is_the_majority_with_ties_going_to_tie(votes, expected):
    assert Comparison.model_validate(record(human=votes)).reference_label == expected


def test_gold_overrides_the_human_majority():
    comparison = Comparison.model_validate(record(human=["A", "A"], gold="B"))
    assert comparison.reference_label is Label.B
    assert comparison.first_human is Label.A


def test_first_human_is_the_single_annotator_label():
    assert Comparison.model_validate(record(human=["B", "A", "A"])).first_human is Label.B
    assert Comparison.model_validate(record()).first_human is None


def test_judge_failure_means_a_judge_with_no_label():
    assert Comparison.model_validate(record(judge={"label": None})).judge_failed
    assert not Comparison.model_validate(record(judge={"label": "A"})).judge_failed
    assert not Comparison.model_validate(record()).judge_failed  # no judge asked
    assert JudgeVerdict().failed


def test_without_labels_drops_human_and_gold_only():
    full = Comparison.model_validate(
        record(human=["A"], gold="A", judge={"label": "B"}, tags={"subject": "law"})
    )
    blind = full.without_labels()
    assert (blind.human, blind.gold) == ([], None)
    assert blind.model_dump(exclude={"human", "gold"}) == full.model_dump(exclude={"human", "gold"})


def test_tags_are_lowercased_strings_and_meta_category_is_a_tag():
    comparison = Comparison.model_validate(
        record(tags={"Subject": " Law ", "level": 3, "empty": None}, meta={"category": " Coding "})
    )
    assert comparison.tags == {"Subject": "law", "level": "3"}
    assert comparison.all_tags == {"Subject": "law", "level": "3", "category": "coding"}
    tagged = Comparison.model_validate(record(tags={"category": "math"}, meta={"category": "x"}))
    assert tagged.all_tags["category"] == "math"


def test_group_defaults_to_the_id():
    assert Comparison.model_validate(record(id="q1")).group == "q1"
    assert Comparison.model_validate(record(meta={"group": 12})).group == "12"


def test_comparisons_are_immutable():
    comparison = Comparison.model_validate(record())
    with pytest.raises(ValueError):
        comparison.prompt = "changed"


@pytest.mark.data
def test_real_data_reads_cleanly(mtbench):
    assert len(mtbench) == 1232
    assert len({c.group for c in mtbench}) == 80
    assert all(c.first_human is not None and c.judge is not None for c in mtbench)
    wrong = sum(c.judge_label != c.reference_label for c in mtbench) / len(mtbench)
    assert 0.25 < wrong < 0.4  # the data README reports 31.6%
