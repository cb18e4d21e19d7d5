"""Fixtures for the lm tests: a live fake LM server and clients aimed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import anthropic
import pytest

from hyper_ls_backend.lm import AnthropicJudge, OpenAICompatibleJudge

from .fake_llm_server import FakeLLMServer
from .helpers import API_KEY, FAST_RETRY


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    fake = FakeLLMServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def anthropic_judge(server: FakeLLMServer) -> Callable[..., AnthropicJudge]:
    def build(**overrides: object) -> AnthropicJudge:
        settings: dict[str, object] = {
            "api_key": API_KEY,
            "base_url": server.base_url,
            "timeout": 2.0,
            "retry": FAST_RETRY,
        }
        settings.update(overrides)
        return AnthropicJudge(**settings)  # type: ignore[arg-type]

    return build


@pytest.fixture
def openai_judge(server: FakeLLMServer) -> Callable[..., OpenAICompatibleJudge]:
    def build(**overrides: object) -> OpenAICompatibleJudge:
        settings: dict[str, object] = {
            "base_url": f"{server.base_url}/v1",
            "model": "local-model",
            "api_key": API_KEY,
            "timeout": 2.0,
            "retry": FAST_RETRY,
        }
        settings.update(overrides)
        return OpenAICompatibleJudge(**settings)  # type: ignore[arg-type]

    return build


@pytest.fixture
def anthropic_client(server: FakeLLMServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=API_KEY, base_url=server.base_url, timeout=2.0, max_retries=0
    )
