"""The shared AIMD limiter: slow start, halving on throttling, growing back, pauses, and
one bound over every thread, judge and tagger that shares it."""

from __future__ import annotations

import threading
import time

import pytest

from hyper_ls_backend.lm import (
    AnthropicTransport,
    JudgePanel,
    OpenAICompatibleTransport,
    RetryPolicy,
)
from hyper_ls_backend.lm.batch import (
    AdaptiveLimiter,
    LimitedTransport,
    Outcome,
    map_bounded,
    run_together,
)
from hyper_ls_backend.lm.transport import Completion, LMError, StructuredRequest, TransientLMError

from .fake_llm_server import (
    FakeLLMServer,
    Recorded,
    Reply,
    anthropic_error,
    anthropic_tool_reply,
    openai_reply,
)
from .helpers import API_KEY, make_comparison, make_judge, make_tagger

REQUEST = StructuredRequest(
    system="s", user="u", schema_name="x", schema_description="d", schema={}, max_tokens=1
)


def answer(limiter: AdaptiveLimiter, n: int) -> None:
    """``n`` requests, one after the other, each answered."""
    for _ in range(n):
        limiter.release(limiter.acquire(), Outcome.ANSWERED)


def test_it_starts_small_and_doubles_each_round_up_to_the_maximum() -> None:
    limiter = AdaptiveLimiter(16, initial=4)
    assert limiter.limit == 4
    answer(limiter, 4)  # one round of 4 answers
    assert limiter.limit == 8
    answer(limiter, 8)
    assert limiter.limit == 16
    answer(limiter, 100)
    assert limiter.limit == 16


def test_a_round_of_refusals_halves_the_limit_once() -> None:
    limiter = AdaptiveLimiter(16, initial=16)
    rounds = [limiter.acquire() for _ in range(16)]
    for started in rounds:  # the whole round is refused: one halving, not sixteen
        limiter.release(started, Outcome.THROTTLED)
    assert limiter.limit == 8
    limiter.release(limiter.acquire(), Outcome.THROTTLED)  # a request of the next round
    assert limiter.limit == 4


def test_after_a_halving_it_grows_by_one_per_round_and_is_restored() -> None:
    limiter = AdaptiveLimiter(16, initial=16)
    limiter.release(limiter.acquire(), Outcome.THROTTLED)
    assert limiter.limit == 8
    answer(limiter, 8)  # one round at 8: one more slot, not twice as many
    assert limiter.limit == 9
    answer(limiter, 9 + 10 + 11 + 12 + 13 + 14 + 15)
    assert limiter.limit == 16


def test_the_limit_never_falls_below_one_and_other_failures_move_nothing() -> None:
    limiter = AdaptiveLimiter(4, initial=4)
    for _ in range(10):
        limiter.release(limiter.acquire(), Outcome.THROTTLED)
    assert limiter.limit == 1
    for _ in range(5):
        limiter.release(limiter.acquire(), Outcome.FAILED)
    assert limiter.limit == 1 and limiter.in_flight == 0


def test_a_retry_after_pauses_every_new_request_until_it_has_passed() -> None:
    limiter = AdaptiveLimiter(8, initial=8)
    limiter.release(limiter.acquire(), Outcome.THROTTLED, retry_after=0.3)
    started = time.monotonic()
    limiter.release(limiter.acquire(), Outcome.ANSWERED)
    assert time.monotonic() - started >= 0.29


def test_waiting_requests_get_their_slots_first_come_first_served() -> None:
    limiter = AdaptiveLimiter(1, initial=1)
    held = limiter.acquire()
    served: list[int] = []

    def ask(n: int) -> None:
        started = limiter.acquire()
        served.append(n)
        limiter.release(started, Outcome.ANSWERED)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(5)]
    deadline = time.monotonic() + 10
    for queued, thread in enumerate(threads, start=1):
        thread.start()
        while len(limiter._waiting) < queued:  # each queued before the next asks
            assert time.monotonic() < deadline, "a request never queued for its slot"
            time.sleep(0.001)
    limiter.release(held, Outcome.ANSWERED)
    for thread in threads:
        thread.join(timeout=5)
    assert served == [0, 1, 2, 3, 4]


def test_requests_queued_during_a_pause_all_go_when_it_is_over() -> None:
    limiter = AdaptiveLimiter(8, initial=8)
    limiter.release(limiter.acquire(), Outcome.THROTTLED, retry_after=0.2)  # limit 4
    started = time.monotonic()
    waited: list[float] = []

    def ask() -> None:
        limiter.acquire()
        waited.append(time.monotonic() - started)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len(waited) == 4 and min(waited) >= 0.19
    assert limiter.in_flight == 4


def test_a_retry_after_pause_is_capped() -> None:
    limiter = AdaptiveLimiter(8, initial=8, max_pause=0.1)
    limiter.release(limiter.acquire(), Outcome.THROTTLED, retry_after=3600)
    started = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - started < 1.0


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimiter(0)
    with pytest.raises(ValueError):
        AdaptiveLimiter(4, initial=0)


class SlowTransport:
    """Answers after ``delay`` (or raises ``error``), counting requests in flight."""

    model = "slow"

    def __init__(self, delay: float, error: LMError | None = None) -> None:
        self.delay, self.error = delay, error
        self.in_flight = self.most = 0
        self._lock = threading.Lock()

    def complete(self, request: StructuredRequest) -> Completion:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
        if self.error is not None:
            raise self.error
        return Completion(text="ok", input_tokens=1, output_tokens=1)


def test_many_threads_never_have_more_requests_in_flight_than_the_limit() -> None:
    slow = SlowTransport(0.02)
    limited = LimitedTransport(slow, AdaptiveLimiter(6, initial=6))
    map_bounded(lambda _: limited.complete(REQUEST), range(120), 40)
    assert slow.most == 6


def test_the_transport_tells_the_limiter_how_each_request_ended() -> None:
    limiter = AdaptiveLimiter(8, initial=8)
    throttled = LimitedTransport(
        SlowTransport(0, TransientLMError("429", 0, throttled=True)), limiter
    )
    with pytest.raises(TransientLMError):
        throttled.complete(REQUEST)
    assert limiter.limit == 4
    failing = LimitedTransport(SlowTransport(0, TransientLMError("HTTP 500")), limiter)
    with pytest.raises(TransientLMError):
        failing.complete(REQUEST)
    assert limiter.limit == 4 and limiter.in_flight == 0


class SlowVerdicts:
    """A responder for several fake servers at once: answers a verdict (or tags) after
    ``delay``, and counts the requests it is answering at once over all of them."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.most = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, request: Recorded) -> Reply:
        with self._lock:
            self._in_flight += 1
            self.most = max(self.most, self._in_flight)
        time.sleep(self.delay)
        with self._lock:
            self._in_flight -= 1
        if request.path.endswith("/chat/completions"):
            return openai_reply('{"rationale": "r", "preference": "Tie"}')
        if request.body["tool_choice"].get("name") == "record_tags":
            return anthropic_tool_reply({"domain": "general"}, name="record_tags")
        return anthropic_tool_reply({"rationale": "r", "preference": "Tie"})


def test_one_limiter_bounds_a_panel_on_two_apis_and_the_tagger_together() -> None:
    """Two judges (Anthropic, OpenAI-compatible) and a tagger, 30 comparisons judged and
    tagged on 30 threads: 4 judge requests per comparison plus a tag, never more than the
    shared limit at once, counted over both servers."""
    first, second = FakeLLMServer().start(), FakeLLMServer().start()
    answering = SlowVerdicts(0.05)
    first.responder = second.responder = answering
    try:
        limiter = AdaptiveLimiter(5, initial=5)
        claude = AnthropicTransport(api_key=API_KEY, base_url=first.base_url, timeout=5)
        local = OpenAICompatibleTransport(base_url=f"{second.base_url}/v1", model="m", timeout=5)
        panel = JudgePanel([make_judge(LimitedTransport(t, limiter)) for t in (claude, local)])
        tagger = make_tagger(LimitedTransport(claude, limiter))

        def judge_and_tag(n: int) -> None:
            comparison = make_comparison(f"c{n}", prompt=f"prompt {n}")
            run_together([lambda: panel.judge(comparison), lambda: tagger.tag(comparison.prompt)])

        map_bounded(judge_and_tag, range(30), 30)
    finally:
        first.stop()
        second.stop()
    assert len(first.requests) == 30 * 3 and len(second.requests) == 30 * 2
    assert answering.most == 5  # reached, never passed, over both servers together


def test_a_429_storm_slows_the_judge_without_failing_a_call(server: FakeLLMServer) -> None:
    """Every other one of the first 60 requests refused with 429 (retry-after 0.05 s):
    every comparison still gets both answers, as the patience for rate limits allows, and
    the limit fell and grew back. The storm is counted in requests, not seconds, so a slow
    machine sees the same storm."""
    lock, count = threading.Lock(), [0]

    def respond(request: Recorded) -> Reply:
        with lock:
            count[0] += 1
            refused = count[0] <= 60 and count[0] % 2 == 0
        if refused:
            return anthropic_error(429, "storm", retry_after="0.05")
        reply = anthropic_tool_reply({"rationale": "r", "preference": "Tie"})
        return Reply(reply.status, reply.body, reply.headers, 0.02)

    server.responder = respond
    limiter = AdaptiveLimiter(8, initial=8)
    transport = LimitedTransport(
        AnthropicTransport(api_key=API_KEY, base_url=server.base_url, timeout=5), limiter
    )
    policy = RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.1, rate_limit_wait=10.0)
    judge = make_judge(transport, retry=policy)
    lowest = [limiter.limit]

    def judged(n: int) -> int:
        result = judge.judge(make_comparison(f"c{n}"))
        lowest.append(limiter.limit)
        assert result.error is None, result.error
        return max(call.attempts for call in result.calls)

    attempts = map_bounded(judged, range(60), 20)
    refused = sum(1 for r in server.requests if r.path == "/v1/messages") - 2 * 60
    assert refused == 30 and max(attempts) > 1  # refused, waited, answered
    assert min(lowest) < 8
    assert limiter.limit == 8  # restored once the storm was over
