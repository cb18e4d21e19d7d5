"""The judge on an OpenAI-compatible chat completions endpoint (vLLM, Ollama, llama.cpp)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import pytest

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.lm import OpenAICompatibleTransport, Price, PriceTable

from .fake_llm_server import FakeLLMServer, Reply, openai_error, openai_reply
from .helpers import API_KEY, make_comparison, make_judge, script_orders

TransportFactory = Callable[..., OpenAICompatibleTransport]


def verdict(preference: str, **usage: int) -> Reply:
    return openai_reply(json.dumps({"rationale": "because", "preference": preference}), **usage)


def test_json_verdicts_in_both_orders(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    script_orders(
        server, ab=(verdict("B-is-slightly-better"),), ba=(verdict("A-is-clearly-better"),)
    )

    result = make_judge(openai_transport()).judge(make_comparison())

    assert result.verdict.label is Label.B
    assert result.verdict.consistent is True
    assert result.verdict.confidence == 0.875
    assert result.verdict.model == "local-model"
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["response_format"]["type"] == "json_schema"
    assert request.body["response_format"]["json_schema"]["name"] == "record_verdict"
    assert request.body["messages"][0]["role"] == "system"
    assert "JSON schema" in request.body["messages"][0]["content"]


@pytest.mark.parametrize(
    ("mode", "expected"), [("json_object", {"type": "json_object"}), ("none", None)]
)
def test_response_format_follows_what_the_server_supports(
    server: FakeLLMServer, openai_transport: TransportFactory, mode: str, expected: object
) -> None:
    server.script(verdict("Tie"), verdict("Tie"))

    make_judge(openai_transport(response_format=mode)).judge(make_comparison())

    assert server.requests[0].body.get("response_format") == expected


def test_fallback_parsing_of_prose_and_embedded_json(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    script_orders(
        server,
        ab=(
            openai_reply('Sure! Here it is: {"preference": "a is clearly better"} Hope it helps.'),
        ),
        ba=(openai_reply("After careful thought: [[B]]"),),
    )

    result = make_judge(openai_transport()).judge(make_comparison())

    assert [c.preference for c in result.calls] == ["A-is-clearly-better", "A-is-slightly-better"]
    assert result.verdict.label is Label.A and result.verdict.consistent is True


def test_local_models_cost_nothing_unless_priced(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    server.script(*[verdict("Tie", prompt_tokens=500, completion_tokens=40)] * 4)

    free = make_judge(openai_transport()).judge(make_comparison())
    prices = PriceTable({"local-model": Price(1.0, 2.0)})
    priced = make_judge(openai_transport(), prices=prices).judge(make_comparison())

    assert (free.input_tokens, free.output_tokens, free.cost_usd) == (1000, 80, 0.0)
    assert priced.cost_usd == pytest.approx((1000 * 1.0 + 80 * 2.0) / 1e6)


def test_rate_limit_with_retry_after_then_success(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    script_orders(server, ab=(openai_error(429, retry_after="0.2"), verdict("Tie")))
    server.responder = lambda request: verdict("Tie")

    start = time.monotonic()
    result = make_judge(openai_transport()).judge(make_comparison())

    assert result.verdict.label is Label.TIE
    assert time.monotonic() - start >= 0.05  # the policy's max_wait caps the server's 0.2 s
    assert result.calls[0].attempts == 2


def test_timeouts_and_server_errors_exhaust_retries(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    """The fixture's 2 s timeout (see test_judge_anthropic.test_timeouts_are_retried)."""
    script_orders(server, ab=(Reply(delay=60.0), openai_error(502), openai_error(503)))
    server.responder = lambda request: openai_error(500, "boom")

    result = make_judge(openai_transport()).judge(make_comparison())

    assert result.failed
    assert result.calls[0].error == "HTTP 503: fake failure"
    assert result.calls[1].error == "HTTP 500: boom"
    assert [c.attempts for c in result.calls] == [3, 3]


@pytest.mark.parametrize(
    "reply",
    [
        openai_reply("I refuse to compare these."),
        openai_reply(None),
        Reply(body="<html>gateway</html>"),
        Reply(body={"choices": []}),
    ],
    ids=["prose", "null-content", "not-json", "no-choices"],
)
def test_garbage_gives_a_failed_verdict(
    server: FakeLLMServer, openai_transport: TransportFactory, reply: Reply
) -> None:
    server.responder = lambda request: reply

    result = make_judge(openai_transport()).judge(make_comparison())

    assert result.failed and result.error


def test_api_key_stays_out_of_logs(
    server: FakeLLMServer, openai_transport: TransportFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.responder = lambda request: openai_error(401, f"bad key {API_KEY}")

    result = make_judge(openai_transport()).judge(make_comparison())

    assert API_KEY not in caplog.text
    assert API_KEY not in result.model_dump_json()
    assert "[redacted]" in (result.error or "")
