"""Fixtures for the server, store and jobs tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lm.fake_llm_server import FakeLLMServer

from hyper_ls_backend.settings import Settings

from .harness import FakeLabelStudio, ScriptedJudge

ENV_NAMES = [name.upper() for name in Settings.model_fields]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting may come from the developer's environment (a real API key above all)."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The judge's retry waits in milliseconds instead of seconds (attempts unchanged)."""
    from hyper_ls_backend.lm import RetryPolicy
    from hyper_ls_backend.lm import build as build_module

    def policy(attempts: int, rate_limit_wait: float) -> RetryPolicy:
        return RetryPolicy(
            attempts=attempts,
            initial_wait=0.001,
            max_wait=0.01,
            rate_limit_wait=rate_limit_wait / 1000,
        )

    monkeypatch.setattr(build_module, "RetryPolicy", policy)


@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    fake = FakeLLMServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def judge(llm: FakeLLMServer) -> ScriptedJudge:
    scripted = ScriptedJudge()
    llm.responder = scripted
    return scripted


@pytest.fixture
def label_studio() -> Iterator[FakeLabelStudio]:
    fake = FakeLabelStudio().start()
    yield fake
    fake.stop()
