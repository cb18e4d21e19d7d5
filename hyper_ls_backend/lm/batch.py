"""Running LM-backed calls side by side, and bounding how many requests are in flight."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from hyper_ls_backend.lm.transport import Completion, StructuredRequest, Transport

T = TypeVar("T")
R = TypeVar("R")


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


class BoundedTransport:
    """A transport letting at most ``limit`` requests through at once, however many threads
    share it. Only requests hold a slot: a call waiting out a retry backoff does not."""

    def __init__(self, transport: Transport, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.model = transport.model
        self._transport = transport
        self._slots = threading.BoundedSemaphore(limit)

    def complete(self, request: StructuredRequest) -> Completion:
        with self._slots:
            return self._transport.complete(request)
