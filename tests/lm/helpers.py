"""Shared test data for the lm tests."""

from __future__ import annotations

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.lm import RetryPolicy

from .fake_llm_server import Recorded

API_KEY = "sk-ant-test-SECRET-0123456789"
FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.001, max_wait=0.05)


def make_comparison(id: str = "c1", **fields: object) -> Comparison:
    values: dict[str, object] = {
        "id": id,
        "prompt": "Explain recursion to a child.",
        "response_a": "ALPHA: a function that calls itself, like nesting dolls.",
        "response_b": "BETA: recursion is recursion.",
    }
    values.update(fields)
    return Comparison.model_validate(values)


def shows_alpha_first(request: Recorded) -> bool:
    """Whether the request showed response ALPHA (response_a) as "A"."""
    text = request.user_text()
    return text.index("ALPHA") < text.index("BETA")
