"""Running LM-backed calls side by side, and bounding how many requests are in flight.

One ``AdaptiveLimiter`` per process bounds the LM requests in flight across every task,
judge and tagger (``HYPER_JUDGE_CONCURRENCY``); each transport is wrapped in a
``LimitedTransport`` sharing it. The bound adapts the way TCP's congestion window does
(AIMD): it starts small and doubles each round of answers up to the maximum (slow start,
so a restarted backend with a backlog does not open with a burst), halves when the API
says slow down (HTTP 429 rate limit, 529 overloaded; once per round, however many
requests of that round are refused), then grows back by one request per round of
answers. A refusal's ``retry-after`` pauses every new request until it has passed, since
a rate limit is the account's, not one request's.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import TypeVar

from hyper_ls_backend.lm.transport import (
    Completion,
    StructuredRequest,
    TransientLMError,
    Transport,
)

T = TypeVar("T")
R = TypeVar("R")

INITIAL_WINDOW = 4
"""Requests in flight before the first answers: small, then doubled each round."""
MAX_PAUSE_S = 60.0
"""The longest ``retry-after`` pause the limiter imposes on new requests."""


class Outcome(Enum):
    """How a request held by the limiter ended."""

    ANSWERED = "answered"
    THROTTLED = "throttled"
    """Refused so that the client slows down: HTTP 429 (rate limit) or 529 (overloaded)."""
    FAILED = "failed"
    """Any other failure: says nothing about the API's pace."""


def map_bounded(fn: Callable[[T], R], items: Iterable[T], max_concurrency: int) -> list[R]:
    """``[fn(item) for item in items]`` on at most ``max_concurrency`` threads, in input order."""
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    items = list(items)
    if max_concurrency == 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(max_concurrency, len(items))) as pool:
        return list(pool.map(fn, items))


def run_together(tasks: Sequence[Callable[[], R]]) -> list[R]:
    """Every task at once, each on its own thread (the first on the caller's); results in
    order. An exception in a task is raised here, after the others have finished."""
    if len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=len(tasks) - 1) as pool:
        others = [pool.submit(task) for task in tasks[1:]]
        first = tasks[0]()
        return [first, *(future.result() for future in others)]


class AdaptiveLimiter:
    """At most ``limit`` requests in flight, however many threads ask; ``limit`` moves
    between 1 and ``maximum`` by AIMD (see the module docstring). Thread-safe.

    A request takes a slot with ``acquire()``, which returns the round it started in, and
    gives it back with ``release(round, outcome)``.
    """

    def __init__(
        self,
        maximum: int,
        *,
        initial: int = INITIAL_WINDOW,
        max_pause: float = MAX_PAUSE_S,
    ) -> None:
        if maximum < 1 or initial < 1:
            raise ValueError("maximum and initial must be at least 1")
        self.maximum = maximum
        self._limit = min(initial, maximum)
        self._threshold = maximum
        """Below it the limit grows by one per answer (slow start), above by one per round."""
        self._answers = 0
        """Answers since the limit last grew (above the threshold it grows every ``limit``)."""
        self._round = 0
        """How many times the limit was halved: a refusal of a request that started before
        the last halving halves nothing more."""
        self._in_flight = 0
        self._paused_until = 0.0
        self._max_pause = max_pause
        self._waiting: deque[threading.Event] = deque()
        """Requests waiting for a slot, first come first served: a comparison's orders ask
        at the same moment, so they get their slots together and few comparisons are left
        half-asked (what a crash would waste)."""
        self._resuming = False
        """A timer will hand out slots when the pause is over."""
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        with self._lock:
            return self._limit

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def acquire(self) -> int:
        """Wait for a slot (and for any retry-after pause to pass); returns the round."""
        with self._lock:
            if not self._waiting and self._free():
                self._in_flight += 1
                return self._round
            turn = threading.Event()
            self._waiting.append(turn)
            self._hand_over()  # when paused: sees that a timer will wake it
        turn.wait()
        with self._lock:
            return self._round

    def release(self, started: int, outcome: Outcome, retry_after: float | None = None) -> None:
        """Give the slot back, saying how the request ended (``started`` is what
        ``acquire`` returned). An answer grows the limit: by one below the threshold, by
        one per ``limit`` answers above it. A refusal to slow down halves it, once per
        round, and its ``retry_after`` pauses new requests. Other failures move nothing."""
        with self._lock:
            self._in_flight -= 1
            if outcome is Outcome.ANSWERED:
                self._answers += 1
                if self._limit < self._threshold or self._answers >= self._limit:
                    self._limit = min(self.maximum, self._limit + 1)
                    self._answers = 0
            elif outcome is Outcome.THROTTLED:
                if started == self._round:
                    self._threshold = max(1, self._limit // 2)
                    self._limit = self._threshold
                    self._answers = 0
                    self._round += 1
                if retry_after:
                    until = time.monotonic() + min(retry_after, self._max_pause)
                    self._paused_until = max(self._paused_until, until)
            self._hand_over()

    def _free(self) -> bool:
        return self._in_flight < self._limit and time.monotonic() >= self._paused_until

    def _resume(self) -> None:
        with self._lock:
            self._resuming = False
            self._hand_over()

    def _hand_over(self) -> None:
        """Give free slots to the longest-waiting requests (the lock held); while paused,
        make sure they are woken when the pause is over."""
        while self._waiting and self._free():
            self._in_flight += 1
            self._waiting.popleft().set()
        pause = self._paused_until - time.monotonic()
        if self._waiting and pause > 0 and not self._resuming:
            self._resuming = True
            timer = threading.Timer(pause + 0.001, self._resume)
            timer.daemon = True
            timer.start()


class LimitedTransport:
    """A transport whose requests each hold a slot of a shared ``AdaptiveLimiter``, and
    tell it how the API answered. Only requests hold a slot: a call waiting out a retry
    backoff does not."""

    def __init__(self, transport: Transport, limiter: AdaptiveLimiter) -> None:
        self.model = transport.model
        self.limiter = limiter
        self._transport = transport

    def complete(self, request: StructuredRequest) -> Completion:
        started = self.limiter.acquire()
        try:
            completion = self._transport.complete(request)
        except TransientLMError as error:
            outcome = Outcome.THROTTLED if error.throttled else Outcome.FAILED
            self.limiter.release(started, outcome, error.retry_after)
            raise
        except BaseException:
            self.limiter.release(started, Outcome.FAILED)
            raise
        self.limiter.release(started, Outcome.ANSWERED)
        return completion
