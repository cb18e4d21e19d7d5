"""How the threads of one process share the database: background work waits while a
request is answered (``RequestsFirst``); on a database that takes one writer at a time
(SQLite) writers take turns, a request's write first (``WriterTurns``), and writes of one
kind made at once share a transaction (``GroupCommit``)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Idle(Protocol):
    """What ``RequestsFirst`` needs of an event: ``threading.Event`` or ``SharedIdle``."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class SharedIdle:
    """``Idle`` across processes: a flag in shared memory, read by polling. Not a
    ``multiprocessing`` Event: that takes a lock shared by the processes, and one killed
    while holding it would leave the other waiting on it for good."""

    POLL = 0.002

    def __init__(self) -> None:
        self._busy = multiprocessing.get_context("spawn").RawValue("b", 0)

    def set(self) -> None:
        self._busy.value = 0

    def clear(self) -> None:
        self._busy.value = 1

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._busy.value:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.POLL)
        return True


class RequestsFirst:
    """Background database work waits while requests are answered.

    Worker threads share the interpreter lock with the threads answering requests, and
    while judging an import they spend most of it in database calls. So a request answered
    ``serving()`` makes every other thread's next database call wait until no request is
    being answered, for at most ``patience`` seconds (background work is delayed, never
    stopped). A thread answering a request never waits here, and its writes are urgent.

    ``idle``, set while no request is answered, may be shared with another process
    (``SharedIdle``): the queue's consumer process then waits for the server's requests
    too. Without it, the consumer's writers, handing SQLite's write lock
    to each other back to back, kept a webhook's transaction sleeping in SQLite's busy
    handler for a second and more.
    """

    def __init__(self, patience: float, idle: Idle | None = None) -> None:
        self.patience = patience
        self._lock = threading.Lock()
        self._serving = 0
        if idle is None:
            idle = threading.Event()
            idle.set()
        self._idle = idle
        self._local = threading.local()

    @property
    def urgent(self) -> bool:
        """Whether this thread is answering a request."""
        return getattr(self._local, "serving", False)

    @contextmanager
    def serving(self) -> Iterator[None]:
        with self._lock:
            self._serving += 1
            self._idle.clear()
        outer, self._local.serving = self.urgent, True
        try:
            yield
        finally:
            self._local.serving = outer
            with self._lock:
                self._serving -= 1
                if not self._serving:
                    self._idle.set()

    def wait(self) -> None:
        """Called before a database call: wait while other threads answer requests."""
        if not self.urgent:
            self._idle.wait(self.patience)


class WriterTurns:
    """A lock handed from one writer to the next in order of arrival, except that a
    writer a request waits for (``urgent``) goes before every background writer waiting.

    A plain lock lets whichever thread the scheduler runs first take it: a webhook's
    transaction waited 1.2 s behind the worker threads storing the tasks they read, one
    transaction each. Here it waits for the transaction under way, then goes. Each waiter
    sleeps on a lock of its own, released when its turn comes, so a release wakes one
    thread, not all of them.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._urgent: deque[threading.Lock] = deque()
        self._background: deque[threading.Lock] = deque()

    @contextmanager
    def turn(self, urgent: bool = False) -> Iterator[None]:
        self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    def _acquire(self, urgent: bool) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            wake = threading.Lock()
            wake.acquire()
            (self._urgent if urgent else self._background).append(wake)
        wake.acquire()  # the writer before hands over: ``_held`` stays True

    def _release(self) -> None:
        with self._mutex:
            waiting = self._urgent or self._background
            if waiting:
                waiting.popleft().release()
            else:
                self._held = False


class GroupCommit(Generic[Item, Result]):
    """Runs the writes of concurrent callers together, each caller returning once its own
    write has committed.

    ``write(items)`` makes the writes of several calls in one transaction, in the order
    given, and returns one result per item. ``submit(item)`` queues the item and waits for
    the transaction holding it: the first caller commits its item alone; the callers who
    arrive while that transaction runs wait for it, and the first of them then commits all
    of their items together. There is no timer: a caller alone waits for nothing. So N
    callers at once pay for a few transactions (and fsyncs) instead of N. ``post(item)``
    returns at once, with a future: the group's own thread leads the transactions (for an
    event loop, which must not wait, nor send a thread of its pool to wait).

    If a shared transaction fails, each of its items is written again in a transaction of
    its own, so an item that cannot be written fails only its own caller.
    """

    def __init__(self, write: Callable[[Sequence[Item]], Sequence[Result]]) -> None:
        self._write = write
        self._queued: list[tuple[Item, Future[Result]]] = []
        self._queue_lock = threading.Lock()
        self._committing = threading.Lock()
        """Held by the caller whose transaction runs; the next holder takes the queue."""
        self._leader = ThreadPoolExecutor(1, thread_name_prefix="group-commit")
        """Leads the transactions of posted items (its thread starts at the first post)."""

    def submit(self, item: Item, alone: bool = False) -> Result:
        """Write the item with those submitted at once; ``alone``: now, in a transaction
        of its own (a caller that must not wait for the others', a request's)."""
        if alone:
            return self._write([item])[0]
        done = self._queue(item)
        self._lead(done)
        return done.result()

    def post(self, item: Item) -> Future[Result]:
        """Queue the item for a transaction led by the group's thread; returns at once."""
        done = self._queue(item)
        self._leader.submit(self._lead, done)
        return done

    def _queue(self, item: Item) -> Future[Result]:
        done: Future[Result] = Future()
        with self._queue_lock:
            self._queued.append((item, done))
        return done

    def _lead(self, done: Future[Result]) -> None:
        """Commit everything queued, unless an earlier transaction took ``done``."""
        with self._committing:
            if not done.done():
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._commit(batch)

    def _commit(self, batch: list[tuple[Item, Future[Result]]]) -> None:
        try:
            results = self._write([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} writes")
        except Exception as error:
            if len(batch) == 1:
                batch[0][1].set_exception(error)
            else:
                for call in batch:
                    self._commit([call])
        except BaseException as error:  # interrupted: no waiting caller is left hanging
            for _, done in batch:
                done.set_exception(error)
            raise
        else:
            for (_, done), result in zip(batch, results, strict=True):
                done.set_result(result)
