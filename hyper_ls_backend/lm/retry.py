"""One retry policy for every LM call: bounded attempts, exponential backoff, retry-after,
and patience with rate limits.

``call_with_retries`` never raises for LM or network failures: it returns a ``CallOutcome``
carrying either the completion or the error, so a batch never dies on one bad call.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception_type

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
    computed wait, capped at ``max_wait`` too, so one call cannot hold a worker for long.

    A throttled answer (429 rate limit, 529 overloaded: the API asks the client to slow
    down, as the shared ``AdaptiveLimiter`` then does) is different: its retry-after is
    waited out in full, and while the call is younger than ``rate_limit_wait`` seconds
    (counting that wait) the refusal does not use up an attempt. After that, or with
    ``rate_limit_wait=0``, it counts like any other failure."""

    attempts: int = 4
    initial_wait: float = 1.0
    max_wait: float = 30.0
    rate_limit_wait: float = 0.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial_wait < 0 or self.max_wait < 0 or self.rate_limit_wait < 0:
            raise ValueError("waits must not be negative")

    def backoff(self, failures: int) -> float:
        """The computed wait after the ``failures``-th failure."""
        backoff = self.initial_wait * 2 ** (failures - 1)
        return min(backoff + random.uniform(0, self.initial_wait), self.max_wait)


class _Attempts:
    """One call's retries under a policy, for tenacity (which asks ``wait``, then
    ``stop``, after each failed attempt)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._counted = 0
        self._throttled = 0

    def wait(self, state: RetryCallState) -> float:
        error = _error(state)
        retry_after = error.retry_after if isinstance(error, TransientLMError) else None
        if isinstance(error, TransientLMError) and error.throttled:
            self._throttled += 1
            return retry_after if retry_after else self._policy.backoff(self._throttled)
        if retry_after is not None:
            return min(retry_after, self._policy.max_wait)
        return self._policy.backoff(state.attempt_number)

    def stop(self, state: RetryCallState) -> bool:
        error = _error(state)
        patient = (
            isinstance(error, TransientLMError)
            and error.throttled
            and state.seconds_since_start + state.upcoming_sleep <= self._policy.rate_limit_wait
        )
        if not patient:
            self._counted += 1
        return self._counted >= self._policy.attempts


def _error(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome else None


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
    budget = _Attempts(policy)
    retrying = Retrying(
        stop=budget.stop,
        wait=budget.wait,
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
