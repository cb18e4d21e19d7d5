"""A panel of judges on two live servers: an Anthropic judge and an OpenAI-compatible one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.lm import (
    AnthropicTransport,
    JudgePanel,
    OpenAICompatibleTransport,
    Price,
    PriceTable,
)

from .fake_llm_server import (
    FakeLLMServer,
    Recorded,
    Reply,
    anthropic_error,
    anthropic_tool_reply,
    openai_error,
    openai_reply,
)
from .helpers import (
    API_KEY,
    make_comparison,
    make_judge,
    script_orders,
    shows_alpha_first,
    together,
)

PRICES = PriceTable({"claude-sonnet-4-6": Price(3.0, 15.0), "local-model": Price(1.0, 2.0)})


def claude_says(preference: str, delay: float = 0.0) -> Reply:
    reply = anthropic_tool_reply({"rationale": "r", "preference": preference})
    return Reply(reply.status, reply.body, reply.headers, delay)


def local_says(preference: str, delay: float = 0.0) -> Reply:
    reply = openai_reply(json.dumps({"rationale": "r", "preference": preference}))
    return Reply(reply.status, reply.body, reply.headers, delay)


def prefers_alpha(say: Callable[[str], Reply]) -> Callable[[Recorded], Reply]:
    """A judge that finds ALPHA clearly better, whichever side it is shown on."""
    return lambda request: say(
        "A-is-clearly-better" if shows_alpha_first(request) else "B-is-clearly-better"
    )


@pytest.fixture
def other_server() -> Iterator[FakeLLMServer]:
    fake = FakeLLMServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def panel(server: FakeLLMServer, other_server: FakeLLMServer) -> JudgePanel:
    """Claude (primary) on ``server``, a local model on ``other_server``."""
    claude = AnthropicTransport(api_key=API_KEY, base_url=server.base_url, timeout=30.0)
    local = OpenAICompatibleTransport(
        base_url=f"{other_server.base_url}/v1", model="local-model", timeout=30.0
    )
    return JudgePanel([make_judge(claude, prices=PRICES), make_judge(local, prices=PRICES)])


def test_every_judge_gives_its_verdict_primary_first(
    panel: JudgePanel, server: FakeLLMServer, other_server: FakeLLMServer
) -> None:
    server.responder = prefers_alpha(claude_says)
    other_server.responder = lambda request: local_says("A-is-slightly-better")  # position bias

    result = panel.judge(make_comparison())

    claude, local = result.verdicts
    assert (claude.model, claude.label, claude.consistent) == ("claude-sonnet-4-6", Label.A, True)
    assert (local.model, local.label, local.consistent) == ("local-model", Label.TIE, False)
    assert local.orders is not None and local.orders.ab == "A-is-slightly-better"
    assert local.orders.ba == "B-is-slightly-better"
    assert not result.failed and result.error is None
    assert (result.input_tokens, result.output_tokens) == (2 * 100 + 2 * 80, 2 * 20 + 2 * 15)
    assert result.cost_usd == pytest.approx((200 * 3 + 40 * 15 + 160 * 1 + 30 * 2) / 1e6)
    assert result.model_dump()["cost_usd"] == pytest.approx(result.cost_usd)
    judged = make_comparison().with_panel(result.verdicts)
    assert judged.judge == claude and judged.panel == [local]


def test_a_failing_judge_is_named_and_the_panel_still_answers(
    panel: JudgePanel, server: FakeLLMServer, other_server: FakeLLMServer
) -> None:
    server.responder = prefers_alpha(claude_says)
    other_server.responder = lambda request: openai_error(500, "GPU fell over")

    result = panel.judge(make_comparison())

    assert not result.failed
    assert [v.failed for v in result.verdicts] == [False, True]
    assert result.error is not None and result.error.startswith("local-model: ")
    assert "A-B order: HTTP 500: GPU fell over" in result.error
    assert "claude-sonnet-4-6" not in result.error
    assert result.results[1].cost_usd == 0.0


def test_the_panel_fails_only_when_every_judge_does(
    panel: JudgePanel, server: FakeLLMServer, other_server: FakeLLMServer
) -> None:
    server.responder = lambda request: anthropic_error(400, "bad request")
    other_server.responder = lambda request: openai_error(400, "bad request")

    result = panel.judge(make_comparison())

    assert result.failed
    assert result.error is not None
    assert "claude-sonnet-4-6: " in result.error and "; local-model: " in result.error


def test_judges_and_their_orders_run_at_the_same_time(
    panel: JudgePanel, server: FakeLLMServer, other_server: FakeLLMServer
) -> None:
    """No request is answered until all four (two judges, two orders each) have arrived,
    over both servers: judge after judge, or order after order, they never would. (Counted,
    not timed: a loaded machine took 0.9 s for what requests of 0.4 s at once take.)"""
    answer = together(
        4,
        lambda request: (
            local_says("Tie", delay=0.4)
            if request.path.endswith("/chat/completions")
            else claude_says("Tie", delay=0.4)
        ),
    )
    server.responder = other_server.responder = answer

    start = time.monotonic()
    result = panel.judge(make_comparison())
    elapsed = time.monotonic() - start

    assert [v.label for v in result.verdicts] == [Label.TIE, Label.TIE]
    assert not result.failed and result.error is None
    assert (server.max_in_flight, other_server.max_in_flight) == (2, 2)
    assert (len(server.requests), len(other_server.requests)) == (2, 2)
    assert result.latency_s == pytest.approx(elapsed, abs=0.05)


def test_a_panel_of_one_is_that_judge(server: FakeLLMServer) -> None:
    transport = AnthropicTransport(api_key=API_KEY, base_url=server.base_url, timeout=2.0)
    judge = make_judge(transport, prices=PRICES)
    for _ in range(2):  # the same answers for the judge alone and for its panel
        script_orders(server, ab=(claude_says("B-is-slightly-better"),), ba=(anthropic_error(400),))

    alone = judge.judge(make_comparison())
    panelled = JudgePanel([judge]).judge(make_comparison())

    assert panelled.verdicts == [alone.verdict]
    assert panelled.results[0].calls == tuple(
        call.model_copy(update={"latency_s": mine.latency_s})
        for call, mine in zip(alone.calls, panelled.results[0].calls, strict=True)
    )
    assert (panelled.input_tokens, panelled.output_tokens, panelled.cost_usd) == (
        alone.input_tokens,
        alone.output_tokens,
        alone.cost_usd,
    )
    assert (panelled.failed, panelled.error) == (alone.failed, alone.error)
    assert panelled.error is not None and panelled.error.startswith("B-A order: HTTP 400")


def test_a_panel_needs_a_judge() -> None:
    with pytest.raises(ValueError, match="at least one judge"):
        JudgePanel([])
