"""A real Label Studio server for tests, run from ``.venv-ls`` (scripts/install_label_studio.sh).

Each run gets its own free loopback port, a fresh data directory (SQLite) and a random
legacy API token, with the settings a backend on loopback needs (see
``shared/notes/label-studio.md``): local ML backends and loopback webhooks allowed, no
analytics, no version check against the package index. The server runs in its own process
group so teardown stops it and its workers.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from processes import free_port, running, unavailable

REPO = Path(__file__).resolve().parents[2]
LS_VENV = Path(os.environ.get("LABEL_STUDIO_VENV", REPO / ".venv-ls"))
LS_EXECUTABLE = LS_VENV / "bin" / "label-studio"
START_TIMEOUT = 600.0
"""About 30 s on an idle machine, minutes on a loaded one (as the benchmarks allow for)."""


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    api_key: str
    log: Path
    data_dir: Path

    def create_user(self, email: str) -> str:
        """A second user of the organisation (an annotator); returns their API token.

        ``label-studio init`` on the running server's data directory: the open-source API
        cannot hand out another user's token.
        """
        token = secrets.token_hex(20)
        command = [str(LS_EXECUTABLE), "init", "--quiet", "--enable-legacy-api-token"]
        command += ["--data-dir", str(self.data_dir), "--username", email]
        command += ["--password", secrets.token_hex(12), "--user-token", token]
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"label-studio init failed ({done.returncode}):\n{done.stderr}")
        return token


def _is_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return json.load(response).get("status") == "UP"
    except (OSError, ValueError):  # refused, reset, timeout, or not JSON yet
        return False


@contextmanager
def run_label_studio(timeout: float = START_TIMEOUT) -> Iterator[LabelStudioServer]:
    """Start Label Studio, wait for ``/health`` to say UP, and stop it on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = secrets.token_hex(20)
    with tempfile.TemporaryDirectory(prefix="label-studio-") as tmp:
        data_dir = Path(tmp) / "data"
        log = Path(tmp) / "label-studio.log"
        env = {
            **os.environ,
            "LABEL_STUDIO_USERNAME": "admin@example.com",
            "LABEL_STUDIO_PASSWORD": secrets.token_hex(12),
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
        }
        command = [
            str(LS_EXECUTABLE),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ]
        with running(command, log, lambda: _is_up(url), timeout=timeout, env=env):
            yield LabelStudioServer(url=url, api_key=token, log=log, data_dir=data_dir)


class _SharedServer:
    """One server per test session, however many conftests ask for it."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._server: LabelStudioServer | None = None
        self._users = 0

    @contextmanager
    def use(self) -> Iterator[LabelStudioServer]:
        if self._server is None:
            self._server = self._stack.enter_context(run_label_studio())
        self._users += 1
        try:
            yield self._server
        finally:
            self._users -= 1
            if self._users == 0:
                self._server = None
                self._stack.close()


_SHARED = _SharedServer()


@pytest.fixture(scope="session")
def label_studio() -> Iterator[LabelStudioServer]:
    """A running Label Studio: skipped without ``.venv-ls``, but a failure under CI."""
    if not LS_EXECUTABLE.exists():
        unavailable(f"{LS_EXECUTABLE} not found: run `make label-studio`")
    with _SHARED.use() as server:
        yield server


def register_marker(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "label_studio: needs a real Label Studio server (from .venv-ls)"
    )
