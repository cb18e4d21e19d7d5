"""Where tagger results are kept between calls: an interface, and an in-memory LRU.

Storage can implement ``TagCache`` to persist tags across restarts; keys are opaque hashes
that already include the model and prompt version.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol


class TagCache(Protocol):
    def get(self, key: str) -> dict[str, str] | None: ...

    def put(self, key: str, tags: dict[str, str]) -> None: ...


class LRUTagCache:
    """Thread-safe; forgets the least recently used entry beyond ``maxsize``."""

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._maxsize = maxsize
        self._entries: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, str] | None:
        with self._lock:
            tags = self._entries.get(key)
            if tags is None:
                return None
            self._entries.move_to_end(key)
            return dict(tags)

    def put(self, key: str, tags: dict[str, str]) -> None:
        with self._lock:
            self._entries[key] = dict(tags)
            self._entries.move_to_end(key)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
