"""Fixtures for the lm tests: a live fake LM server and transports aimed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import anthropic
import pytest

from hyper_ls_backend.lm import AnthropicTransport, OpenAICompatibleTransport

from .fake_llm_server import FakeLLMServer
from .helpers import API_KEY


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    fake = FakeLLMServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def anthropic_transport(server: FakeLLMServer) -> Callable[..., AnthropicTransport]:
    """Builds an ``AnthropicTransport`` aimed at the fake server; keywords override."""
    return partial(AnthropicTransport, api_key=API_KEY, base_url=server.base_url, timeout=2.0)


@pytest.fixture
def openai_transport(server: FakeLLMServer) -> Callable[..., OpenAICompatibleTransport]:
    """Builds an ``OpenAICompatibleTransport`` aimed at the fake server; keywords override."""
    return partial(
        OpenAICompatibleTransport,
        base_url=f"{server.base_url}/v1",
        model="local-model",
        api_key=API_KEY,
        timeout=2.0,
    )


@pytest.fixture
def anthropic_client(server: FakeLLMServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key=API_KEY, base_url=server.base_url, timeout=2.0, max_retries=0
    )
