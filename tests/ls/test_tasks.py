"""Turning Label Studio tasks into comparisons: no server needed."""

from __future__ import annotations

from typing import Any

import pytest

from hyper_ls_backend.core.comparison import Turn
from hyper_ls_backend.ls.label_config import (
    PreferenceConfig,
    parse_label_config,
    task_to_comparison,
)
from ls.configs import SHIPPED, config

STANDARD = parse_label_config(SHIPPED["5point"])
RENAMED = parse_label_config(
    config(
        '<Text name="q" value="$question"/><Text name="ctx" value="$context"/>'
        '<Text name="a1" value="$answer1"/><Text name="a2" value="$answer2"/>',
        "A",
        "B",
        "Tie",
    )
)


def _task(**data: Any) -> dict[str, Any]:
    base = {"prompt": "Why is the sky blue?", "response_a": "Rayleigh.", "response_b": "Magic."}
    return {"id": 7, "data": {**base, **data}, "meta": {}, "annotations": []}


def test_task_becomes_a_comparison() -> None:
    task = _task(tags={"Subject": "Physics"}, meta={"group": "q1"})

    comparison = task_to_comparison(task, STANDARD)

    assert comparison.id == "7"
    assert comparison.prompt == "Why is the sky blue?"
    assert (comparison.response_a, comparison.response_b) == ("Rayleigh.", "Magic.")
    assert comparison.tags == {"Subject": "physics"}
    assert comparison.group == "q1"
    assert comparison.context_a == comparison.context_b == []


def test_renamed_fields_and_context_text_are_read() -> None:
    task = {
        "id": 3,
        "data": {
            "question": "And in French?",
            "context": "user: Hi",
            "answer1": "x",
            "answer2": "",
        },
    }

    comparison = task_to_comparison(task, RENAMED)

    assert (comparison.prompt, comparison.response_a, comparison.response_b) == (
        "And in French?",
        "x",
        "",
    )
    assert (
        comparison.context_a == comparison.context_b == [Turn(role="context", content="user: Hi")]
    )


def test_context_turns_are_shared_unless_a_side_has_its_own() -> None:
    shared = [{"role": "user", "content": "Hi"}]
    own_b = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]

    comparison = task_to_comparison(_task(context=shared, context_b=own_b), STANDARD)

    assert comparison.context_a == [Turn(role="user", content="Hi")]
    assert comparison.context_b == [Turn(**turn) for turn in own_b]


@pytest.mark.parametrize(
    ("task", "config", "message"),
    [
        ({"data": {}}, STANDARD, "the task has no id"),
        ({"id": 1}, STANDARD, "task 1: 'data' is missing"),
        (
            {"id": 1, "data": {"response_a": "a", "response_b": "b"}},
            STANDARD,
            r"task 1: data.prompt \(the prompt\) is missing",
        ),
        (_task(response_b=["not", "text"]), STANDARD, r"data.response_b \(response B\) is list"),
        (_task(prompt="  "), STANDARD, r"data.prompt \(the prompt\) is empty"),
        (_task(response_a="", response_b=" "), STANDARD, "are both empty"),
        (_task(), RENAMED, r"data.question \(the prompt\) is missing"),
        (_task(context=[{"speaker": "x"}]), STANDARD, "data.context must be text or a list"),
        (_task(context_a=42), STANDARD, "data.context_a must be text or a list"),
        (_task(tags=["a"]), STANDARD, "data.tags must be an object"),
        (
            _task(response_a="x" * 1_000_001),
            STANDARD,
            r"task 7: data.response_a: .*1,000,001 characters",
        ),
    ],
)
def test_bad_tasks_name_the_field_at_fault(
    task: dict[str, Any], config: PreferenceConfig, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        task_to_comparison(task, config)
