"""Reading verdicts from whatever shape a model answers in."""

from __future__ import annotations

import pytest

from hyper_ls_backend.lm.parsing import (
    UnparseableAnswer,
    extract_json_object,
    normalise_preference,
    parse_verdict,
    preference_in_prose,
)
from hyper_ls_backend.lm.transport import Completion


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("A-is-clearly-better", "A-is-clearly-better"),
        ("b is slightly better", "B-is-slightly-better"),
        ("B_IS_CLEARLY_BETTER", "B-is-clearly-better"),
        ("tie", "Tie"),
        ("A", "A-is-slightly-better"),
        ("both", None),
        (3, None),
    ],
)
def test_preference_spellings(given: object, expected: str | None) -> None:
    assert normalise_preference(given) == expected


def test_json_is_found_inside_fences_and_prose() -> None:
    text = 'Thinking {not json}.\n```json\n{"preference": "Tie", "rationale": "same"}\n```'

    assert extract_json_object(text) == {"preference": "Tie", "rationale": "same"}


def test_ambiguous_prose_is_not_guessed() -> None:
    assert preference_in_prose("A-is-slightly-better, or maybe B-is-slightly-better") is None
    assert preference_in_prose("Final verdict: [[C]]") == "Tie"


def test_structured_answer_with_an_invalid_preference_falls_back_to_the_text() -> None:
    completion = Completion(
        text="B is clearly better", input_tokens=1, output_tokens=1, data={"preference": "??"}
    )

    assert parse_verdict(completion).preference == "B-is-clearly-better"


def test_unparseable_answer_names_what_came_back() -> None:
    completion = Completion(text="no idea", input_tokens=1, output_tokens=1)

    with pytest.raises(UnparseableAnswer, match="no idea"):
        parse_verdict(completion)
