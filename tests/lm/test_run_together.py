"""``run_together``: calls side by side, results in order, an exception raised once every
call has finished."""

from __future__ import annotations

import threading
import time

import pytest

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
