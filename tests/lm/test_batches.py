"""The Message Batches API through the real ``anthropic`` SDK, against the fake server's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hyper_ls_backend.lm import AnthropicTransport, LMError
from hyper_ls_backend.lm import batches as batches_module
from hyper_ls_backend.lm.batches import BatchGone, BatchItem, MessageBatches, pack
from hyper_ls_backend.lm.retry import CallOutcome
from hyper_ls_backend.lm.transport import TransientLMError

from .fake_llm_server import (
    FakeLLMServer,
    Recorded,
    Reply,
    anthropic_error,
    anthropic_tool_reply,
)
from .helpers import API_KEY, make_comparison, make_judge, shows_alpha_first


def items_for(judge_requests: int) -> list[BatchItem]:
    judge = make_judge(AnthropicTransport(api_key=API_KEY, base_url="http://unused"))
    return [
        BatchItem(f"t{n}-{'ba' if swapped else 'ab'}", judge.request(make_comparison(), swapped))
        for n in range(judge_requests)
        for swapped in (False, True)
    ]


def verdict(request: Recorded) -> Reply:
    answer = "A-is-clearly-better" if shows_alpha_first(request) else "B-is-clearly-better"
    return anthropic_tool_reply(
        {"rationale": "ALPHA explains", "preference": answer},
        input_tokens=1_000_000,
        output_tokens=100_000,
    )


def test_a_batch_is_created_polled_and_read_back_as_completions(
    server: FakeLLMServer, anthropic_transport: Callable[..., AnthropicTransport]
) -> None:
    server.responder = verdict
    server.batch_seconds = 0.3
    transport = anthropic_transport(model="claude-sonnet-4-6")
    batches = MessageBatches(transport)
    judge = make_judge(transport)
    comparison = make_comparison()
    items = [
        BatchItem(f"c1-{order}", judge.request(comparison, swapped))
        for order, swapped in (("ab", False), ("ba", True))
    ]

    created = batches.submit(items)
    first = batches.state(created.id)
    batch = server.batches[created.id]
    while not batches.state(created.id).ended:
        pass
    ended = batches.state(created.id)
    results = {result.custom_id: result for result in batches.results(created.id, "record_verdict")}

    assert created.status == first.status == "in_progress"
    assert created.counts["processing"] == created.requests == 2
    assert ended.counts == {**dict.fromkeys(ended.counts, 0), "succeeded": 2}
    assert [item["params"] for item in batch.requests] == [
        transport.params(item.request) for item in items
    ]
    assert batch.requests[0]["params"]["tool_choice"] == {"type": "tool", "name": "record_verdict"}
    assert {r.outcome for r in results.values()} == {"succeeded"}
    calls = [
        judge.answer(swapped, CallOutcome(results[key].completion, None, 1, 0.0), batch=True)
        for key, swapped in (("c1-ab", False), ("c1-ba", True))
    ]
    result = judge.result(comparison, calls, 0.0)
    assert result.verdict.label.value == "A" and result.verdict.consistent
    # Sonnet 4.6 lists $3 / $15 per million tokens; a batch pays half: (3 + 1.5) / 2 each.
    assert [call.cost_usd for call in calls] == pytest.approx([2.25, 2.25])
    assert all(call.batch for call in calls)


def test_partial_errors_and_expired_requests_come_back_per_request(
    server: FakeLLMServer, anthropic_transport: Callable[..., AnthropicTransport]
) -> None:
    def answer(request: Recorded) -> Reply:
        if "t1-" in request.path:
            return anthropic_error(529, f"overloaded for {API_KEY}")
        return verdict(request)

    server.responder = answer
    server.expire_in_batch = lambda request: "t2-" in request.path
    batches = MessageBatches(anthropic_transport())

    created = batches.submit(items_for(3))
    results = {r.custom_id: r for r in batches.results(created.id, "record_verdict")}

    assert batches.state(created.id).counts == {
        "processing": 0,
        "succeeded": 2,
        "errored": 2,
        "expired": 2,
        "canceled": 0,
    }
    assert {key: r.outcome for key, r in results.items()} == {
        "t0-ab": "succeeded",
        "t0-ba": "succeeded",
        "t1-ab": "errored",
        "t1-ba": "errored",
        "t2-ab": "expired",
        "t2-ba": "expired",
    }
    assert results["t1-ab"].error == "batch request overloaded_error: overloaded for [redacted]"
    assert results["t2-ab"].completion is None and results["t2-ab"].error == "batch request expired"


def test_a_batch_that_expires_whole_ends_with_every_request_expired(
    server: FakeLLMServer, anthropic_transport: Callable[..., AnthropicTransport]
) -> None:
    server.responder = verdict
    server.batch_seconds = 3600
    batches = MessageBatches(anthropic_transport())
    created = batches.submit(items_for(2))

    assert batches.state(created.id).status == "in_progress"
    server.expire(created.id)

    assert batches.state(created.id).counts["expired"] == 4
    assert {r.outcome for r in batches.results(created.id, "record_verdict")} == {"expired"}


def test_api_errors_are_the_transports_and_an_unknown_batch_is_gone(
    server: FakeLLMServer, anthropic_transport: Callable[..., AnthropicTransport]
) -> None:
    batches = MessageBatches(anthropic_transport())

    server.refuse_batches = anthropic_error(429, "slow down", retry_after="7")
    with pytest.raises(TransientLMError) as limited:
        batches.submit(items_for(1))
    server.refuse_batches = anthropic_error(400, "batches are not enabled")
    with pytest.raises(LMError) as refused:
        batches.submit(items_for(1))
    with pytest.raises(BatchGone):
        batches.state("msgbatch_unknown")

    assert limited.value.retry_after == 7.0
    assert not isinstance(refused.value, TransientLMError)
    assert "invalid_request_error: batches are not enabled" in str(refused.value)


def test_pack_splits_requests_into_batches_the_api_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = AnthropicTransport(api_key=API_KEY, base_url="http://unused")
    items = items_for(5)

    monkeypatch.setattr(batches_module, "MAX_BATCH_REQUESTS", 4)
    by_count = pack(items, transport)
    monkeypatch.setattr(batches_module, "MAX_BATCH_REQUESTS", 100)
    monkeypatch.setattr(batches_module, "MAX_BATCH_BYTES", 3000)
    by_size = pack(items, transport)

    assert [len(group) for group in by_count] == [4, 4, 2]
    assert [item for group in by_size for item in group] == items
    assert len(by_size) > 1 and all(group for group in by_size)
