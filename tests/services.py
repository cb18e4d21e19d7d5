"""Real PostgreSQL and Redis servers for tests, started as throwaway processes.

Each server gets a free loopback port and its own temporary data directory, runs in its own
process group and is stopped at the end of the session. Nothing relies on a system service.
Binaries come from ``scripts/install_test_services.sh`` (Debian's packages): ``redis-server``
from PATH, PostgreSQL from PATH or ``/usr/lib/postgresql/<version>/bin`` (where Debian keeps
it). Without them a test is skipped locally and fails under ``CI``.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) its processes run
as the ``nobody`` user, which every Debian system has, in a data directory given to it.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from processes import free_port, running, unavailable

PG_USER = "hyper"
UNPRIVILEGED_USER = "nobody"


def _pg_dsn(port: int, database: str = "postgres") -> str:
    return f"postgresql://{PG_USER}@127.0.0.1:{port}/{database}"


@dataclass(frozen=True)
class PostgresServer:
    port: int
    _names: Iterator[int] = field(default_factory=itertools.count)

    def create_database(self) -> str:
        """A new, empty database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        name = f"test_{next(self._names)}"
        with psycopg.connect(_pg_dsn(self.port), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{name}"


@dataclass(frozen=True)
class RedisServer:
    port: int

    def fresh_url(self) -> str:
        """The server's URL, after dropping every key an earlier test left."""
        url = f"redis://127.0.0.1:{self.port}/0"
        with redis.Redis.from_url(url) as client:
            client.flushall()
        return url


def postgres_bin_dir() -> Path | None:
    """The directory of ``postgres`` and its ``initdb``: PATH first, then Debian's layout
    (the newest version)."""
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    installed = Path("/usr/lib/postgresql").glob("*/bin/postgres")
    newest = max(installed, key=lambda path: int(path.parts[-3]), default=None)
    return newest.parent if newest else None


def _unprivileged() -> dict[str, Any]:
    """``Popen`` arguments that drop root, or nothing when not root."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(UNPRIVILEGED_USER)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _accepts(connect: Callable[[], Any]) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            connect()
        except (psycopg.OperationalError, redis.ConnectionError):
            return False
        return True

    return ready


@contextmanager
def run_postgres(bin_dir: Path) -> Iterator[PostgresServer]:
    """initdb a cluster in a temporary directory and run ``postgres`` on it.

    Durability is off (``fsync``, ``full_page_writes``): the cluster is thrown away.
    """
    port, drop_root = free_port(), _unprivileged()
    with tempfile.TemporaryDirectory(prefix="hyper-postgres-") as tmp:
        if drop_root:
            os.chown(tmp, drop_root["user"], drop_root["group"])
        data, log = Path(tmp) / "data", Path(tmp) / "postgres.log"
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust"]
        initdb += ["--locale=C", "--encoding=UTF8", "--no-sync"]
        done = subprocess.run(initdb, capture_output=True, text=True, **drop_root)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stderr}")
        command = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", tmp]
        for setting in (
            "listen_addresses=127.0.0.1",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=200",
        ):
            command += ["-c", setting]
        ready = _accepts(lambda: psycopg.connect(_pg_dsn(port)).close())
        # SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
        with running(command, log, ready, stop_signal=signal.SIGINT, **drop_root):
            yield PostgresServer(port)


@contextmanager
def run_redis(executable: str) -> Iterator[RedisServer]:
    """``redis-server`` without persistence, in a temporary working directory."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hyper-redis-") as tmp:
        command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp]
        command += ["--save", "", "--appendonly", "no"]
        ready = _accepts(lambda: redis.Redis(port=port).ping())
        with running(command, Path(tmp) / "redis.log", ready):
            yield RedisServer(port)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session: skipped without the binaries, a failure under CI."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        unavailable("PostgreSQL (postgres) not found: run scripts/install_test_services.sh")
    with run_postgres(bin_dir) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server for the session: skipped without ``redis-server``, a failure under CI."""
    executable = shutil.which("redis-server")
    if executable is None:
        unavailable("redis-server not found: run scripts/install_test_services.sh")
    with run_redis(executable) as server:
        yield server
