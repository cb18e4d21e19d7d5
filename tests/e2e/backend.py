"""The real backend (``hyper-ls serve``) as a subprocess, and a scripted fake judge for it.

``BackendProcess`` starts the console script with a test environment on a free loopback
port, waits for ``/health`` and can be killed (SIGKILL, to simulate a crash) and started
again on the same ``MODEL_DIR``. ``ScriptedJudge`` answers the backend's judge calls on the
fake Anthropic server (``tests/lm/fake_llm_server.py``) according to a marker the test puts
in each task's prompt, so a test decides per task what the judge says or how it fails.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from lm.fake_llm_server import (
    FakeLLMServer,
    Recorded,
    Reply,
    anthropic_error,
    anthropic_tool_reply,
)
from processes import free_port, tail

from hyper_ls_backend.settings import Settings

HYPER_LS = Path(sys.executable).parent / "hyper-ls"
SETTING_NAMES = frozenset(Settings.model_fields)
"""No setting reaches the backend from the developer's environment (a real API key above all)."""
START_TIMEOUT = 300.0
"""/health answers 14 s after launch on a quiet 2-core machine, several times that on a busy one."""
TEST_API_KEY = "sk-ant-e2e-test-0123456789"


class BackendProcess:
    """``hyper-ls serve`` on 127.0.0.1; ``start()`` again after ``kill()`` keeps MODEL_DIR."""

    def __init__(self, env: Mapping[str, str], model_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_dir = model_dir
        self.log = log
        inherited = {k: v for k, v in os.environ.items() if k.lower() not in SETTING_NAMES}
        self.env = {
            **inherited,
            "MODEL_DIR": str(model_dir),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def auth(self) -> tuple[str, str] | None:
        user = self.env.get("BASIC_AUTH_USER")
        return (user, self.env.get("BASIC_AUTH_PASS", "")) if user else None

    def start(self, timeout: float = START_TIMEOUT) -> BackendProcess:
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(HYPER_LS), "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + timeout
        while True:
            status, _ = self.request("GET", "/health", auth=self.auth)
            if status == 200:
                break
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"hyper-ls serve exited with {self.process.returncode}:\n{tail(self.log)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"backend not up after {timeout:.0f} s:\n{tail(self.log)}")
            time.sleep(0.1)
        self.startup_s = time.monotonic() - started
        return self

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash or an OOM kill looks like."""
        self._signal(signal.SIGKILL, grace=10.0)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, grace=15.0)
        self._signal(signal.SIGKILL, grace=5.0)

    def _signal(self, sig: signal.Signals, grace: float) -> None:
        if self.process is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        auth: tuple[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """(status, parsed JSON body or text); status 0 when nothing answers."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("content-type", "application/json")
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read())
        except OSError:
            return 0, None

    def logs(self) -> str:
        return tail(self.log, 60)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of the backend's own SQLite database, read-only (it may be running)."""
        path = self.model_dir / "hyper.sqlite3"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql, params).fetchall()


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


# -- the fake judge -----------------------------------------------------------------------

MARKER = re.compile(r"\[judge:(?P<plan>[a-z0-9\-]+)\]")
ALPHA, BETA = "ALPHA", "BETA"
"""Response A of every test task starts with ALPHA, response B with BETA: the judge reads
the order it was shown them from where they appear."""

SWAP = {
    "A-is-clearly-better": "B-is-clearly-better",
    "A-is-slightly-better": "B-is-slightly-better",
    "Tie": "Tie",
    "B-is-slightly-better": "A-is-slightly-better",
    "B-is-clearly-better": "A-is-clearly-better",
}
PLANS = {
    "a-clear": "A-is-clearly-better",
    "a-slight": "A-is-slightly-better",
    "tie": "Tie",
    "b-slight": "B-is-slightly-better",
    "b-clear": "B-is-clearly-better",
}
"""Plans where the judge answers consistently in both orders (in the task's orientation)."""


class ScriptedJudge:
    """A responder for ``FakeLLMServer`` driven by ``[judge:PLAN]`` in the prompt.

    Plans: the keys of ``PLANS`` (a consistent answer); ``biased`` (always "the first shown
    is clearly better": inconsistent across orders); ``fail-500`` / ``fail-429`` /
    ``fail-timeout`` (every attempt fails that way); ``flaky`` (429 then 500 in the A-B
    order, a timeout then 429 in the B-A order, then the ``a-clear`` answer). ``calls``
    counts requests per (task key, order), the key being the ``<<KEY>>`` of the prompt.
    """

    def __init__(self, slow_s: float) -> None:
        self.slow_s = slow_s
        self.delay_s = 0.0
        """Seconds every answer (not an error) takes: stretches an import out."""
        self.calls: Counter[tuple[str, bool]] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: Recorded) -> Reply:
        text = request.user_text()
        match = MARKER.search(text)
        plan = match["plan"] if match else "a-clear"
        swapped = text.index(BETA) < text.index(ALPHA)
        key = _task_key(text)
        with self._lock:
            self.calls[(key, swapped)] += 1
            attempt = self.calls[(key, swapped)]
        if plan == "fail-500":
            return anthropic_error(500, "scripted internal error")
        if plan == "fail-429":
            return anthropic_error(429, "scripted rate limit", retry_after="0")
        if plan == "fail-timeout":
            return _slow(self.slow_s)
        if plan == "flaky" and attempt <= 2:
            rate_limit = anthropic_error(429, "scripted rate limit", retry_after="0")
            failures = (
                [_slow(self.slow_s), rate_limit]
                if swapped
                else [rate_limit, anthropic_error(500, "scripted internal error")]
            )
            return failures[attempt - 1]
        if plan == "biased":
            answer = "A-is-clearly-better"
        else:
            shown = PLANS.get(plan, PLANS["a-clear"])
            answer = SWAP[shown] if swapped else shown
        reply = anthropic_tool_reply({"rationale": f"scripted: {plan}", "preference": answer})
        return dataclasses.replace(reply, delay=self.delay_s)

    def attempts(self, key: str) -> dict[bool, int]:
        """Requests seen for the task whose prompt starts with ``key``, by order (swapped)."""
        with self._lock:
            return {swapped: self.calls[(key, swapped)] for swapped in (False, True)}


def _slow(seconds: float) -> Reply:
    """A valid answer that arrives after the backend's judge timeout."""
    answer = anthropic_tool_reply({"rationale": "too late", "preference": "Tie"})
    return Reply(status=200, body=answer.body, delay=seconds)


def _task_key(text: str) -> str:
    """The task's own key: ``KEY`` from the ``<<KEY>>`` every test prompt starts with."""
    match = re.search(r"<<(?P<key>[^>]+)>>", text)
    return match["key"] if match else "?"


def comparison_data(key: str, plan: str = "a-clear", **overrides: Any) -> dict[str, Any]:
    """A task's ``data``: prompt tagged with its key and the judge's plan."""
    data: dict[str, Any] = {
        "prompt": f"<<{key}>> [judge:{plan}] What is a good way to learn {key}?",
        "response_a": f"{ALPHA} {key}: practise a little every day and review mistakes.",
        "response_b": f"{BETA} {key}: read about it once.",
    }
    data.update(overrides)
    return data


def start_fake_judge(slow_s: float) -> tuple[FakeLLMServer, ScriptedJudge]:
    server = FakeLLMServer()
    judge = ScriptedJudge(slow_s)
    server.responder = judge
    return server.start(), judge


def wait_for(
    condition: Callable[[], Any], timeout: float, interval: float = 0.5, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
