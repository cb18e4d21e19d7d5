"""Helpers for tests that run real servers as throwaway processes (Label Studio, PostgreSQL,
Redis) or need a real program on the machine (Chromium, the shared data)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def unavailable(message: str) -> NoReturn:
    """What a test needs is not on this machine: skipped locally, a failure under ``CI``."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def running(
    command: list[str],
    log: Path,
    ready: Callable[[], bool],
    *,
    stop_signal: signal.Signals = signal.SIGTERM,
    timeout: float = 60.0,
    **popen: Any,
) -> Iterator[None]:
    """Run ``command`` in its own process group until the block ends; enter the block once
    ``ready()`` holds. On exit the group gets ``stop_signal``, then SIGKILL for what is left."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **popen,
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command[0]} not ready after {timeout:.0f} s:\n{tail(log)}")
            time.sleep(0.1)
        yield
    finally:
        for sig, grace in ((stop_signal, 30.0), (signal.SIGKILL, 5.0)):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
                break
