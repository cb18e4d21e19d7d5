"""Running many LM-backed calls with a bound on how many are in flight at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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
