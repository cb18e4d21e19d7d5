"""Shared test data for the lm tests."""

from __future__ import annotations

from functools import partial

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.lm import Judge, RetryPolicy, Tagger

from .fake_llm_server import FakeLLMServer, Recorded, Reply

API_KEY = "sk-ant-test-SECRET-0123456789"
FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.001, max_wait=0.05)

make_judge = partial(Judge, retry=FAST_RETRY)
"""``Judge(transport, ...)`` with fast retries unless ``retry`` is given."""
make_tagger = partial(Tagger, retry=FAST_RETRY)
"""``Tagger(transport, ...)`` with fast retries unless ``retry`` is given."""


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


def shows_beta_first(request: Recorded) -> bool:
    return not shows_alpha_first(request)


def script_orders(
    server: FakeLLMServer, *, ab: tuple[Reply, ...] = (), ba: tuple[Reply, ...] = ()
) -> None:
    """Queue replies for the A-B order's requests (ALPHA first) and the B-A order's: the
    judge sends both orders at once, so their arrival order is not fixed."""
    server.script(*ab, when=shows_alpha_first)
    server.script(*ba, when=shows_beta_first)
