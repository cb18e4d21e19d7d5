"""The retry policy against a real HTTP server: retry-after honoured, rate limits waited
out within the policy's patience without using up attempts, other failures counted."""

from __future__ import annotations

import time
from collections.abc import Callable

from hyper_ls_backend.lm import AnthropicTransport, RetryPolicy
from hyper_ls_backend.lm.prompts import judge_request
from hyper_ls_backend.lm.retry import call_with_retries

from .fake_llm_server import FakeLLMServer, anthropic_error, anthropic_tool_reply
from .helpers import make_comparison

TransportFactory = Callable[..., AnthropicTransport]
REQUEST = judge_request(make_comparison(), swapped=False, max_chars=1000, max_tokens=100)
VERDICT = anthropic_tool_reply({"rationale": "r", "preference": "Tie"})


def policy(**fields: float) -> RetryPolicy:
    return RetryPolicy(**{"attempts": 2, "initial_wait": 0.01, "max_wait": 0.05, **fields})


def test_rate_limits_within_the_patience_use_up_no_attempt(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.script(*[anthropic_error(429, retry_after="0.05")] * 5, VERDICT)

    outcome = call_with_retries(anthropic_transport(), REQUEST, policy(rate_limit_wait=5.0))

    assert outcome.completion is not None and outcome.error is None
    assert outcome.attempts == 6  # with attempts=2


def test_a_rate_limit_outlasting_the_patience_fails_the_call(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.responder = lambda request: anthropic_error(429, "still limited", retry_after="0.2")

    started = time.monotonic()
    outcome = call_with_retries(anthropic_transport(), REQUEST, policy(rate_limit_wait=0.5))

    assert outcome.completion is None and "HTTP 429" in (outcome.error or "")
    # waits of 0.2 s are patient up to 0.5 s (two of them), then two refusals count
    assert outcome.attempts == 4
    assert 0.6 <= time.monotonic() - started < 3.0


def test_a_throttled_retry_after_is_waited_out_in_full_past_max_wait(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.script(anthropic_error(529, "Overloaded", retry_after="0.4"), VERDICT)

    started = time.monotonic()
    outcome = call_with_retries(anthropic_transport(), REQUEST, policy(rate_limit_wait=5.0))

    assert outcome.completion is not None and outcome.attempts == 2
    assert time.monotonic() - started >= 0.4  # max_wait is 0.05


def test_another_failures_retry_after_is_capped_at_max_wait(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.script(anthropic_error(503, "unavailable", retry_after="30"), VERDICT)

    started = time.monotonic()
    outcome = call_with_retries(anthropic_transport(), REQUEST, policy(rate_limit_wait=5.0))

    assert outcome.completion is not None and outcome.attempts == 2
    assert time.monotonic() - started < 5.0


def test_server_errors_count_against_attempts_whatever_the_patience(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.responder = lambda request: anthropic_error(500, "broken")

    outcome = call_with_retries(anthropic_transport(), REQUEST, policy(rate_limit_wait=60.0))

    assert outcome.completion is None and "HTTP 500" in (outcome.error or "")
    assert outcome.attempts == 2 and len(server.requests) == 2


def test_without_patience_a_rate_limit_counts_like_any_failure(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.responder = lambda request: anthropic_error(429, "limited", retry_after="0")

    outcome = call_with_retries(anthropic_transport(), REQUEST, policy())

    assert outcome.completion is None and outcome.attempts == 2
