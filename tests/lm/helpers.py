"""Shared test data for the lm tests."""

from __future__ import annotations

import threading
from functools import partial

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.lm import Judge, RetryPolicy, Tagger

from .fake_llm_server import FakeLLMServer, Recorded, Reply, Responder

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


def together(n: int, answer: Responder, timeout: float = 5.0) -> Responder:
    """A responder (for one server or several) that answers with ``answer`` only once ``n``
    requests are waiting for it, so a test of concurrency counts requests, not seconds:
    requests sent one after the other never are, and after ``timeout`` each gets a 400
    (not retried). A client's timeout must be longer, or its retry would make up the count."""
    arrived = threading.Barrier(n, timeout=timeout)

    def respond(request: Recorded) -> Reply:
        try:
            arrived.wait()
        except threading.BrokenBarrierError:
            message = f"fake server: fewer than {n} requests at once"
            return Reply(status=400, body={"error": {"message": message}})
        return answer(request)

    return respond
