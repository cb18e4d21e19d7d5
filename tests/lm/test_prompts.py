"""What the judge is shown: the user's message, or that there is none."""

from __future__ import annotations

import pytest

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.lm.prompts import NO_PROMPT_NOTE, judge_request


@pytest.mark.parametrize("swapped", [False, True])
def test_a_pair_without_a_prompt_is_judged_as_two_texts(swapped):
    pair = Comparison(id="p", prompt="", response_a="first text", response_b="second text")
    request = judge_request(pair, swapped=swapped)
    assert NO_PROMPT_NOTE in request.user
    assert "<final_user_message>" not in request.user
    shown_a = "second text" if swapped else "first text"
    assert f"<response_a>\n{shown_a}\n</response_a>" in request.user


def test_a_prompt_is_shown_as_the_final_user_message():
    pair = Comparison(id="p", prompt="Explain recursion.", response_a="a", response_b="b")
    request = judge_request(pair, swapped=False)
    assert "<final_user_message>\nExplain recursion.\n</final_user_message>" in request.user
    assert NO_PROMPT_NOTE not in request.user
