"""Shared fixtures: the real data when it is present, real PostgreSQL and Redis servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from processes import unavailable
from services import postgres_server, redis_server

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.dataset import read_comparisons

__all__ = ["postgres_server", "redis_server"]

DATA_FILE = "mtbench_human_gpt4.jsonl"


def data_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("HYPER_DATA_DIR", default))


@pytest.fixture(scope="session")
def mtbench() -> list[Comparison]:
    """The real MT-Bench comparisons. Skipped locally when absent; a failure under CI."""
    path = data_dir() / DATA_FILE
    if not path.exists():
        unavailable(f"{path} not found (set HYPER_DATA_DIR)")
    return read_comparisons(path)
