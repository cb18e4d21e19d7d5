"""The Anthropic judge against a live fake Messages API, through the real SDK."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import anthropic
import pytest

from hyper_ls_backend.core.comparison import Label, OrderAnswers
from hyper_ls_backend.lm import AnthropicTransport, Judge, Price, PriceTable, RetryPolicy

from .fake_llm_server import (
    FakeLLMServer,
    Recorded,
    Reply,
    anthropic_error,
    anthropic_text_reply,
    anthropic_tool_reply,
)
from .helpers import (
    API_KEY,
    make_comparison,
    make_judge,
    script_orders,
    shows_alpha_first,
    shows_beta_first,
    together,
)

TransportFactory = Callable[..., AnthropicTransport]


def verdict(preference: str, **usage: int) -> Reply:
    return anthropic_tool_reply({"rationale": "because", "preference": preference}, **usage)


def test_verdict_in_both_orders_is_unswapped_and_consistent(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    # ALPHA is better: the judge says "A" when ALPHA is shown first and "B" when swapped.
    script_orders(
        server, ab=(verdict("A-is-clearly-better"),), ba=(verdict("B-is-clearly-better"),)
    )

    result = make_judge(anthropic_transport()).judge(make_comparison())

    assert result.verdict.label is Label.A
    assert result.verdict.consistent is True
    assert result.verdict.confidence == 1.0
    assert result.verdict.model == "claude-sonnet-4-6"
    assert [c.preference for c in result.calls] == ["A-is-clearly-better"] * 2
    assert [c.swapped for c in result.calls] == [False, True]
    assert result.calls[1].raw is not None and "B-is-clearly-better" in result.calls[1].raw
    assert result.calls[0].rationale == "because"
    assert result.verdict.orders == OrderAnswers(ab="A-is-clearly-better", ba="A-is-clearly-better")
    assert result.error is None
    assert [request.path for request in server.requests] == ["/v1/messages"] * 2
    assert sorted(shows_alpha_first(request) for request in server.requests) == [False, True]


def test_request_forces_the_verdict_tool_with_the_five_point_schema(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.script(verdict("Tie"), verdict("Tie"))

    make_judge(anthropic_transport()).judge(make_comparison())

    body = server.requests[0].body
    assert body["tool_choice"] == {"type": "tool", "name": "record_verdict"}
    schema = body["tools"][0]["input_schema"]
    assert schema["properties"]["preference"]["enum"] == [
        "A-is-clearly-better",
        "A-is-slightly-better",
        "Tie",
        "B-is-slightly-better",
        "B-is-clearly-better",
    ]
    assert "temperature" not in body  # gone from the Messages API in SDK 2.x


def test_auto_tool_choice_for_models_that_reject_forced_tools(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.script(verdict("Tie"), verdict("Tie"))

    make_judge(anthropic_transport(tool_choice="auto")).judge(make_comparison())

    assert server.requests[0].body["tool_choice"] == {"type": "auto"}


def test_position_biased_judge_is_inconsistent(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    # Always prefers whatever is shown first: after un-swapping the answers disagree.
    server.script(verdict("A-is-slightly-better"), verdict("A-is-slightly-better"))

    result = make_judge(anthropic_transport()).judge(make_comparison())

    assert result.verdict.consistent is False
    assert result.verdict.label is Label.TIE
    assert result.verdict.confidence == 0.0
    assert [c.preference for c in result.calls] == ["A-is-slightly-better", "B-is-slightly-better"]


def test_plain_text_answer_is_parsed_when_no_tool_use_comes_back(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    script_orders(
        server,
        ab=(anthropic_text_reply("Having compared both, my verdict: B is slightly better."),),
        ba=(anthropic_text_reply('```json\n{"preference": "A-is-slightly-better"}\n```'),),
    )

    result = make_judge(anthropic_transport()).judge(make_comparison())

    # B-slightly in the first order; A-slightly when swapped means B-slightly too.
    assert result.verdict.label is Label.B
    assert result.verdict.consistent is True
    assert result.verdict.confidence == 0.75


def test_tokens_and_cost_are_summed_over_both_calls(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    script_orders(
        server,
        ab=(verdict("Tie", input_tokens=1000, output_tokens=200),),
        ba=(verdict("Tie", input_tokens=1200, output_tokens=100),),
    )

    result = make_judge(anthropic_transport()).judge(make_comparison())

    assert (result.input_tokens, result.output_tokens) == (2200, 300)
    assert result.cost_usd == pytest.approx((2200 * 3.0 + 300 * 15.0) / 1e6)
    assert result.calls[0].cost_usd == pytest.approx((1000 * 3.0 + 200 * 15.0) / 1e6)
    assert result.model_dump()["cost_usd"] == pytest.approx(result.cost_usd)
    assert result.latency_s > 0


def test_price_table_is_configurable(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.script(
        verdict("Tie", input_tokens=1_000_000, output_tokens=0),
        verdict("Tie", input_tokens=1_000_000, output_tokens=0),
    )
    prices = PriceTable({"claude-sonnet-4-6": Price(input_per_mtok=0.5, output_per_mtok=1.0)})

    result = make_judge(anthropic_transport(), prices=prices).judge(make_comparison())

    assert result.cost_usd == pytest.approx(1.0)


@pytest.mark.parametrize("status", [429, 500, 529])
def test_retryable_errors_are_retried_then_succeed(
    server: FakeLLMServer, anthropic_transport: TransportFactory, status: int
) -> None:
    script_orders(server, ab=(anthropic_error(status), verdict("Tie")), ba=(verdict("Tie"),))

    result = make_judge(anthropic_transport()).judge(make_comparison())

    assert result.verdict.label is Label.TIE
    assert [c.attempts for c in result.calls] == [2, 1]
    assert len(server.requests) == 3


def test_retry_after_is_honoured(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.script(anthropic_error(429, retry_after="0.3"), verdict("Tie"), verdict("Tie"))
    judge = make_judge(
        anthropic_transport(), retry=RetryPolicy(attempts=2, initial_wait=0.001, max_wait=5.0)
    )

    start = time.monotonic()
    result = judge.judge(make_comparison())

    assert time.monotonic() - start >= 0.3
    assert result.verdict.label is Label.TIE


def test_timeouts_are_retried(server: FakeLLMServer, anthropic_transport: TransportFactory) -> None:
    """The fixture's 2 s timeout: with 0.2 s, a loaded machine (p99 0.17 s, most 0.87 s
    for a plain answer) timed out the answers that were not meant to time out."""
    script_orders(server, ab=(Reply(delay=60.0), verdict("Tie")), ba=(verdict("Tie"),))

    result = make_judge(anthropic_transport()).judge(make_comparison())

    assert result.verdict.label is Label.TIE
    assert result.calls[0].attempts == 2


def test_exhausted_retries_give_a_failed_verdict_with_the_error(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.responder = lambda request: anthropic_error(529, "Overloaded")

    result = make_judge(anthropic_transport()).judge(make_comparison())

    assert result.failed and result.verdict.label is None
    assert result.verdict.consistent is None and result.verdict.confidence is None
    assert result.error is not None and "HTTP 529 overloaded_error: Overloaded" in result.error
    assert [c.attempts for c in result.calls] == [3, 3]
    assert len(server.requests) == 6
    assert result.cost_usd == 0.0


def test_client_errors_are_not_retried(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.responder = lambda request: anthropic_error(400, "tool_choice not supported")

    result = make_judge(anthropic_transport()).judge(make_comparison())

    assert result.failed
    assert [c.attempts for c in result.calls] == [1, 1]
    assert "tool_choice not supported" in (result.error or "")


def test_unreachable_server_gives_a_failed_verdict(anthropic_transport: TransportFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    judge = make_judge(anthropic_transport(base_url=f"http://127.0.0.1:{closed_port}"))

    result = judge.judge(make_comparison())

    assert result.failed
    assert "connection error" in (result.error or "")


def test_garbage_answer_fails_but_its_tokens_are_charged(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.responder = lambda request: anthropic_text_reply(
        "I cannot decide, both have merit. A is good; B is good.", output_tokens=50
    )

    result = make_judge(anthropic_transport()).judge(make_comparison())

    assert result.failed
    assert "no preference in the answer" in (result.error or "")
    assert result.output_tokens == 100 and result.cost_usd > 0
    assert len(server.requests) == 2  # an unreadable answer is not retried


def test_one_failed_order_still_gives_a_verdict_marked_single_order(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    script_orders(server, ab=(verdict("A-is-clearly-better"),), ba=(anthropic_error(500),) * 3)

    result = make_judge(anthropic_transport()).judge(make_comparison())

    assert result.verdict.label is Label.A
    assert result.verdict.consistent is None
    assert result.verdict.confidence == 0.5
    assert result.verdict.orders == OrderAnswers(ab="A-is-clearly-better", ba=None)
    assert result.error is not None and result.error.startswith("B-A order: HTTP 500")


def test_both_orders_are_asked_at_once(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    """Neither order is answered until both have arrived: asked one after the other, the
    first would be refused. (Counted, not timed: a loaded machine took 1.2 s for what two
    requests of 0.4 s at once take.)"""
    server.responder = together(2, lambda request: verdict("Tie"))

    result = make_judge(anthropic_transport(timeout=30.0)).judge(make_comparison())

    assert result.verdict.label is Label.TIE and result.error is None
    assert server.max_in_flight == 2 and len(server.requests) == 2


def test_judge_many_bounds_concurrency_and_keeps_input_order(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    def answer(request: Recorded) -> Reply:
        # Comparisons with an even id prefer ALPHA, odd ones BETA.
        even = int(request.user_text().split("item-")[1].split()[0]) % 2 == 0
        alpha_wins = "A-is-clearly-better" if shows_alpha_first(request) else "B-is-clearly-better"
        beta_wins = "B-is-clearly-better" if shows_alpha_first(request) else "A-is-clearly-better"
        return Reply(**{**verdict(alpha_wins if even else beta_wins).__dict__, "delay": 0.03})

    server.responder = answer
    comparisons = [make_comparison(str(i), prompt=f"Question item-{i} here.") for i in range(12)]

    results = make_judge(anthropic_transport()).judge_many(comparisons, max_concurrency=3)

    assert [r.comparison_id for r in results] == [str(i) for i in range(12)]
    assert [r.verdict.label for r in results] == [Label.A, Label.B] * 6
    assert server.max_in_flight == 3  # requests, although each comparison sends two at once


def test_judge_many_with_one_request_at_a_time(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.responder = lambda request: Reply(**{**verdict("Tie").__dict__, "delay": 0.02})

    results = make_judge(anthropic_transport()).judge_many(
        [make_comparison(str(i)) for i in range(3)], max_concurrency=1
    )

    assert [r.verdict.label for r in results] == [Label.TIE] * 3
    assert server.max_in_flight == 1 and len(server.requests) == 6


def test_context_and_truncation_reach_the_prompt(
    server: FakeLLMServer, anthropic_transport: TransportFactory
) -> None:
    server.script(verdict("Tie"), verdict("Tie"))
    comparison = make_comparison(
        context_a=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "CTX-ALPHA"},
        ],
        context_b=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "CTX-BETA"}],
        response_b="BETA " + "x" * 500,
    )

    make_judge(anthropic_transport(), max_text_chars=100).judge(comparison)

    first = next(r.user_text() for r in server.requests if shows_alpha_first(r))
    second = next(r.user_text() for r in server.requests if shows_beta_first(r))
    assert first.index("CTX-ALPHA") < first.index("CTX-BETA")
    assert second.index("CTX-BETA") < second.index("CTX-ALPHA")
    assert "truncated: showing the first 100 of 505 characters" in first
    assert "were truncated to 100 characters" in first


def test_injected_sdk_client_is_used(
    server: FakeLLMServer, anthropic_client: anthropic.Anthropic
) -> None:
    server.script(verdict("Tie"), verdict("Tie"))

    transport = AnthropicTransport(anthropic_client, model="claude-haiku-4-5")

    result = Judge(transport).judge(make_comparison())

    assert result.verdict.label is Label.TIE
    assert server.requests[0].body["model"] == "claude-haiku-4-5"


def test_a_transport_needs_credentials_given_explicitly() -> None:
    with pytest.raises(ValueError, match="client or an api_key"):
        AnthropicTransport()


def test_api_key_never_reaches_logs_or_errors(
    server: FakeLLMServer, anthropic_transport: TransportFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(
        anthropic_error(429),
        verdict("Tie"),
        anthropic_error(401, f"invalid x-api-key: {API_KEY}"),
    )

    result = make_judge(anthropic_transport()).judge(make_comparison())

    assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"  # it was sent
    assert result.error is not None and "[redacted]" in result.error
    assert API_KEY not in caplog.text
    assert API_KEY not in result.model_dump_json()
    assert "retrying" in caplog.text  # the retry was logged, without the key
