"""The imports ``TASKS_CREATED`` webhooks deliver: stored as they came while each webhook
waits for its answer, recorded as tasks and routed by a thread of their own once the
webhooks stop coming.

Recording an import (reading which of its tasks are new, numbering it, a row per task)
and enqueueing its routing took the CPU of the interpreter that answers every request:
with 50 webhooks at once, the last was answered 150-250 ms after it came
(``benchmarks/import_latency.py``). Storing what came is one row per import, in one
transaction for the webhooks answered at once (``GroupCommit``). An import is as safe when
its webhook is answered as before: one received but not yet recorded when the process
stops is recorded at its next start, before the work left is re-enqueued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from hyper_ls_backend.jobs.queue import JobQueue
from hyper_ls_backend.store import Store
from hyper_ls_backend.store.repository import Import
from hyper_ls_backend.store.writers import GroupCommit

log = logging.getLogger(__name__)

QUIET = 0.1
"""Seconds without a new import after which the received ones are recorded."""
MOST_DELAY = 0.5
"""Seconds an import waits at most to be recorded while imports keep coming."""
RETRY = 1.0
"""Seconds between tries when recording fails (the database unreachable)."""


class ImportInbox:
    """Received imports, recorded and routed by the inbox's thread once started; before
    (immediate mode, a model never started) by the caller of ``receive``."""

    def __init__(
        self, store: Store, queue: JobQueue, quiet: float = QUIET, most_delay: float = MOST_DELAY
    ) -> None:
        self.quiet, self.most_delay = quiet, most_delay
        self._store = store
        self._queue = queue
        self._received: GroupCommit[Import, None] = GroupCommit(self._keep)
        self._arrived = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def receive(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> None:
        """Store an import; it is recorded and routed soon after (before this returns
        when the inbox's thread does not run)."""
        self._received.submit((project_id, tasks))
        if self.running:
            self._arrived.set()
        else:
            self.drain()

    def post(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> Future[None]:
        """``receive`` for an event loop, once the inbox's thread runs: returns at once,
        with a future done when the import is stored."""
        stored = self._received.post((project_id, tasks))
        stored.add_done_callback(lambda _: self._arrived.set())
        return stored

    def drain(self, route: bool = True) -> int:
        """Record every import received, in order of arrival, and enqueue its routing;
        returns how many imports. ``route=False``: at start-up, for what a stopped process
        left received (the work left is re-enqueued next: ``HyperModel.resume``)."""
        recorded = 0
        while imports := self._store.record_received():
            recorded += len(imports)
            if route:
                self._route(imports)
        return recorded

    def _route(self, imports: Sequence[Import]) -> None:
        """One routing job per project for the imports' tasks."""
        task_ids: dict[int, list[int]] = {}
        for project_id, tasks in imports:
            task_ids.setdefault(project_id, []).extend(int(task["id"]) for task in tasks)
        for project_id, ids in task_ids.items():
            self._queue.route(project_id, ids)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="import-inbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """After the imports being recorded are routed."""
        if self._thread is None:
            return
        self._stopping.set()
        self._arrived.set()
        self._thread.join()
        self._thread = None

    def _keep(self, imports: Sequence[Import]) -> list[None]:
        with self._store.serving():  # posted: on the group's thread, for a request
            self._store.receive_imports(imports)
        return [None] * len(imports)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._arrived.wait()
            self._until_quiet()
            try:
                self.drain()
            except Exception:
                log.exception("received imports not recorded; trying again in %.0f s", RETRY)
                self._arrived.set()
                self._stopping.wait(RETRY)

    def _until_quiet(self) -> None:
        """Until no import came for ``quiet`` seconds, or ``most_delay`` after the first:
        recording while webhooks still come would slow their answers."""
        deadline = time.monotonic() + self.most_delay
        while not self._stopping.is_set():
            self._arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0 or not self._arrived.wait(min(self.quiet, left)):
                return
