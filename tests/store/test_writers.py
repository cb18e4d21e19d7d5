"""How threads share the database: requests first, writers in turns, group commit."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

import pytest

from hyper_ls_backend.store.writers import GroupCommit, RequestsFirst, SharedIdle, WriterTurns


def started(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


# -- WriterTurns ----------------------------------------------------------------------------


def test_an_urgent_writer_goes_before_background_writers_that_came_first() -> None:
    turns = WriterTurns()
    order: list[str] = []
    release = threading.Event()

    def first() -> None:
        with turns.turn():
            release.wait()

    def writer(name: str, urgent: bool) -> Callable[[], None]:
        def write() -> None:
            with turns.turn(urgent):
                order.append(name)

        return write

    threads = [started(first)]
    wait_for(lambda: turns._held)
    for queued, name in enumerate(("background-1", "background-2"), start=1):
        threads.append(started(writer(name, urgent=False)))
        wait_for(lambda queued=queued: len(turns._background) == queued)
    threads.append(started(writer("urgent", urgent=True)))
    wait_for(lambda: len(turns._urgent) == 1)
    release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["urgent", "background-1", "background-2"]
    assert not turns._held


def test_a_writer_alone_takes_its_turn_at_once_and_turns_survive_an_error() -> None:
    turns = WriterTurns()
    with pytest.raises(ValueError), turns.turn():
        raise ValueError("the transaction failed")
    done = threading.Event()

    def write() -> None:
        with turns.turn():
            done.set()

    started(write)
    assert done.wait(timeout=5)
    wait_for(lambda: not turns._held)


# -- GroupCommit ----------------------------------------------------------------------------


class Recorder:
    """A ``write`` that records its batches; the first one waits until ``go`` is set."""

    def __init__(self, bad: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.go = threading.Event()
        self.bad = bad

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.go.wait(timeout=10)
        if self.bad in items:
            raise ValueError(f"cannot write {self.bad}")
        return [item * 10 for item in items]


def submit_all(group: GroupCommit[int, int], items: Sequence[int]) -> dict[int, object]:
    """Submit ``items[0]``, then the rest while its transaction runs; every outcome."""
    outcomes: dict[int, object] = {}

    def submit(item: int) -> Callable[[], None]:
        def run() -> None:
            try:
                outcomes[item] = group.submit(item)
            except ValueError as error:
                outcomes[item] = error

        return run

    threads = [started(submit(items[0]))]
    wait_for(lambda: len(group._write.batches) == 1)  # type: ignore[attr-defined]
    for item in items[1:]:
        threads.append(started(submit(item)))
    wait_for(lambda: len(group._queued) == len(items) - 1)
    group._write.go.set()  # type: ignore[attr-defined]
    for thread in threads:
        thread.join(timeout=10)
    return outcomes


def test_callers_arriving_during_a_transaction_share_the_next_one() -> None:
    write = Recorder()
    outcomes = submit_all(GroupCommit(write), [1, 2, 3, 4, 5])
    assert write.batches[0] == [1]
    assert sorted(write.batches[1]) == [2, 3, 4, 5] and len(write.batches) == 2
    assert outcomes == {1: 10, 2: 20, 3: 30, 4: 40, 5: 50}


def test_an_item_that_cannot_be_written_fails_only_its_caller() -> None:
    write = Recorder(bad=4)
    outcomes = submit_all(GroupCommit(write), [1, 2, 3, 4, 5])
    assert isinstance(outcomes.pop(4), ValueError)
    assert outcomes == {1: 10, 2: 20, 3: 30, 5: 50}
    assert sorted(write.batches[1]) == [2, 3, 4, 5]  # together first, then one by one
    assert sorted(map(tuple, write.batches[2:])) == [(2,), (3,), (4,), (5,)]


def test_an_item_submitted_alone_does_not_wait_for_the_transaction_under_way() -> None:
    write = Recorder()
    group = GroupCommit(write)
    first = started(lambda: group.submit(1))
    wait_for(lambda: len(write.batches) == 1)  # the first transaction runs, held
    assert group.submit(9, alone=True) == 90
    assert write.batches == [[1], [9]] and first.is_alive()
    write.go.set()
    first.join(timeout=10)


# -- RequestsFirst --------------------------------------------------------------------------


def test_background_calls_wait_while_a_request_is_answered() -> None:
    requests = RequestsFirst(patience=10.0)
    answered, waited = threading.Event(), threading.Event()
    leave = threading.Event()

    def answer() -> None:
        with requests.serving():
            requests.wait()  # the request's own calls never wait
            answered.set()
            leave.wait(timeout=10)

    started(answer)
    assert answered.wait(timeout=5)
    started(lambda: (requests.wait(), waited.set()))
    assert not waited.wait(timeout=0.2)
    leave.set()
    assert waited.wait(timeout=5)
    assert not requests.urgent


def test_background_calls_wait_no_longer_than_their_patience() -> None:
    requests = RequestsFirst(patience=0.05)
    with requests.serving():
        assert requests.urgent
        waited: list[float] = []

        def background() -> None:
            start = time.monotonic()
            requests.wait()
            waited.append(time.monotonic() - start)

        started(background).join(timeout=5)
    assert 0.04 < waited[0] < 2.0


def wait_in_another_process(idle: SharedIdle, out: Connection) -> None:
    """A consumer process's database call: when it went on, after the server's requests
    (``time.monotonic`` is the same clock in every process of the machine)."""
    requests = RequestsFirst(patience=10.0, idle=idle)
    out.send("started")
    requests.wait()
    out.send(time.monotonic())


def test_another_process_waits_while_this_one_answers_a_request() -> None:
    """The queue's consumer process shares the server's ``SharedIdle``: its call goes on
    only once the request is answered. The order of the two moments is asserted, not how
    long the call waited: the child may be scheduled late after it says it started."""
    idle = SharedIdle()
    requests = RequestsFirst(patience=10.0, idle=idle)
    context = multiprocessing.get_context("spawn")
    received, sent = context.Pipe(duplex=False)
    with requests.serving():
        child = context.Process(target=wait_in_another_process, args=(idle, sent))
        child.start()
        assert received.poll(timeout=60) and received.recv() == "started"
        assert not received.poll(timeout=0.5)  # still waiting: a request is being answered
        answered = time.monotonic()
    assert received.poll(timeout=10)
    assert received.recv() >= answered
    child.join(timeout=10)


def test_posted_items_are_written_together_by_the_groups_thread() -> None:
    release = threading.Event()
    batches: list[tuple[list[int], str]] = []

    def write(items: Sequence[int]) -> list[int]:
        batches.append((list(items), threading.current_thread().name))
        if len(batches) == 1:
            release.wait(10)
        return [10 * item for item in items]

    group: GroupCommit[int, int] = GroupCommit(write)
    first = group.post(1)
    wait_for(lambda: bool(batches))
    rest = [group.post(item) for item in range(2, 6)]  # while the first transaction runs
    release.set()
    assert [done.result(10) for done in [first, *rest]] == [10, 20, 30, 40, 50]
    assert [items for items, _ in batches] == [[1], [2, 3, 4, 5]]
    assert {thread for _, thread in batches} != {threading.current_thread().name}
