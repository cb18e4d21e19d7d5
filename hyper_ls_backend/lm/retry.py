"""One retry policy for every LM call: bounded attempts, exponential backoff, retry-after.

``call_with_retries`` never raises for LM or network failures: it returns a ``CallOutcome``
carrying either the completion or the error, so a batch never dies on one bad call.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from hyper_ls_backend.lm.pricing import PriceTable
from hyper_ls_backend.lm.transport import (
    Completion,
    LMError,
    StructuredRequest,
    TransientLMError,
    Transport,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` counts the first try. Waits grow from ``initial_wait`` (doubling, with
    up to ``initial_wait`` of jitter) to ``max_wait``; a server's retry-after replaces the
    computed wait but is capped at ``max_wait`` too, so one call cannot hold a worker for
    long."""

    attempts: int = 4
    initial_wait: float = 1.0
    max_wait: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial_wait < 0 or self.max_wait < 0:
            raise ValueError("waits must not be negative")

    def wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientLMError) and error.retry_after is not None:
            return min(error.retry_after, self.max_wait)
        backoff = self.initial_wait * 2 ** (state.attempt_number - 1)
        return min(backoff + random.uniform(0, self.initial_wait), self.max_wait)


@dataclass(frozen=True)
class CallOutcome:
    """A completion, or the error that ended the last attempt."""

    completion: Completion | None
    error: str | None
    attempts: int
    latency_s: float

    def record(self, prices: PriceTable, model: str) -> dict[str, Any]:
        """The fields every call's result keeps: the answer verbatim, tokens, cost, latency,
        attempts, and the error when the call failed (a failed call costs nothing)."""
        completion = self.completion
        if completion is None:
            return {"latency_s": self.latency_s, "attempts": self.attempts, "error": self.error}
        return {
            "raw": completion.raw,
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
            "cost_usd": prices.cost(model, completion.input_tokens, completion.output_tokens),
            "latency_s": self.latency_s,
            "attempts": self.attempts,
        }


def call_with_retries(
    transport: Transport, request: StructuredRequest, policy: RetryPolicy
) -> CallOutcome:
    start = time.monotonic()
    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=policy.wait,
        retry=retry_if_exception_type(TransientLMError),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        completion = retrying(transport.complete, request)
    except LMError as error:
        attempts = retrying.statistics.get("attempt_number", 1)
        log.warning(
            "LM call to %s failed after %d attempt(s): %s", transport.model, attempts, error
        )
        return CallOutcome(None, str(error), attempts, time.monotonic() - start)
    attempts = retrying.statistics.get("attempt_number", 1)
    return CallOutcome(completion, None, attempts, time.monotonic() - start)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.info("LM call attempt %d failed (%s); retrying in %.2fs", state.attempt_number, error, wait)
