"""``run_together``: calls side by side on the process's pool, nested calls that cannot
deadlock however busy the pool is, and a forked child with a pool of its own."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hyper_ls_backend.lm import batch
from hyper_ls_backend.lm.batch import run_together


def test_the_calls_run_at_the_same_time_and_their_results_come_in_order() -> None:
    meeting = threading.Barrier(3, timeout=10)  # broken unless all three are in flight

    def call(value: int) -> int:
        meeting.wait()
        return value

    assert run_together([lambda: call(1), lambda: call(2), lambda: call(3)]) == [1, 2, 3]


def test_an_exception_is_raised_once_the_other_calls_have_finished() -> None:
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        finished.set()

    def failing() -> None:
        raise RuntimeError("judge down")

    with pytest.raises(RuntimeError, match="judge down"):
        run_together([failing, slow])
    assert finished.is_set()
    with pytest.raises(RuntimeError, match="judge down"):
        run_together([slow, failing])  # raised from the pool too


def test_nested_calls_on_a_pool_with_one_thread_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    """A panel's judges each asking two orders: the pool's one thread busy with an outer
    call, the inner calls it waits for run on the threads waiting for them."""
    with ThreadPoolExecutor(1) as single:
        monkeypatch.setattr(batch, "_side_pool", single)

        def judge(n: int) -> list[int]:
            return run_together([lambda: n * 10 + 1, lambda: n * 10 + 2, lambda: n * 10 + 3])

        results: list[list[list[int]]] = []
        panel = threading.Thread(
            target=lambda: results.append(run_together([lambda n=n: judge(n) for n in range(4)]))
        )
        panel.start()
        panel.join(timeout=10)
        assert not panel.is_alive(), "nested run_together deadlocked"
    assert results == [[[n * 10 + 1, n * 10 + 2, n * 10 + 3] for n in range(4)]]


def _together_in_child(done: multiprocessing.Queue) -> None:
    meeting = threading.Barrier(2, timeout=10)
    done.put(run_together([meeting.wait, meeting.wait]))


def test_a_forked_child_runs_calls_together_on_a_pool_of_its_own() -> None:
    run_together([lambda: None, lambda: None])  # the parent's pool has threads now
    fork = multiprocessing.get_context("fork")
    done = fork.Queue()
    child = fork.Process(target=_together_in_child, args=(done,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert sorted(done.get(timeout=5)) == [0, 1]  # the barrier's two arrival indices
