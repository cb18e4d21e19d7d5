"""The Anthropic Messages API as a ``Transport``, through the official SDK.

The answer is asked for as a tool call whose input schema is the answer's schema. By
default the tool is forced (``tool_choice="forced"``); models that reject forced tool use
(Claude Sonnet 5.5) need ``tool_choice="auto"``, where the instructions ask for the tool
and a plain-text answer is still parsed. The SDK's own retries are off: ``retry.py`` owns
retrying, for every API alike. No sampling parameters are sent: the current Messages API
(SDK 2.x) no longer takes ``temperature``.
"""

from __future__ import annotations

from typing import Any, Literal

import anthropic

from hyper_ls_backend.lm.transport import (
    Completion,
    LMError,
    Redactor,
    StructuredRequest,
    TransientLMError,
    status_error,
)

DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-6"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"

ToolChoice = Literal["forced", "auto"]


def build_anthropic_client(
    *, api_key: str, base_url: str = ANTHROPIC_BASE_URL, timeout: float = 60.0
) -> anthropic.Anthropic:
    """A client configured only from its arguments (base_url is passed, not read from env)."""
    return anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)


class AnthropicTransport:
    def __init__(
        self,
        client: anthropic.Anthropic | None = None,
        *,
        api_key: str | None = None,
        base_url: str = ANTHROPIC_BASE_URL,
        timeout: float = 60.0,
        model: str = DEFAULT_ANTHROPIC_MODEL,
        tool_choice: ToolChoice = "forced",
    ) -> None:
        if client is None:
            if not api_key:
                raise ValueError("AnthropicTransport needs a client or an api_key")
            client = build_anthropic_client(api_key=api_key, base_url=base_url, timeout=timeout)
        self.model = model
        self._client = client
        self._tool_choice = tool_choice
        self._redact = Redactor.of([api_key, client.api_key])

    @property
    def client(self) -> anthropic.Anthropic:
        """The SDK client (``batches.py`` sends its Message Batches through it)."""
        return self._client

    def params(self, request: StructuredRequest) -> dict[str, Any]:
        """The Messages API parameters for ``request``: what ``complete`` sends, and what a
        Message Batches request carries."""
        tool = {
            "name": request.schema_name,
            "description": request.schema_description,
            "input_schema": request.schema,
        }
        choice: dict[str, Any] = (
            {"type": "tool", "name": request.schema_name}
            if self._tool_choice == "forced"
            else {"type": "auto"}
        )
        return {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "system": f"{request.system}\n\nAnswer by calling the {request.schema_name} tool.",
            "messages": [{"role": "user", "content": request.user}],
            "tools": [tool],
            "tool_choice": choice,
        }

    def complete(self, request: StructuredRequest) -> Completion:
        try:
            message = self._client.messages.create(**self.params(request))
        except anthropic.APITimeoutError as error:
            raise TransientLMError("request timed out") from error
        except anthropic.APIConnectionError as error:
            raise TransientLMError(self._redact(f"connection error: {error}")) from error
        except anthropic.APIStatusError as error:
            detail = self._redact(status_detail(error))
            raise status_error(error.status_code, detail, error.response.headers) from error
        except anthropic.AnthropicError as error:
            raise LMError(self._redact(f"{type(error).__name__}: {error}")) from error
        return completion_of(message, request.schema_name)

    def redact(self, text: str) -> str:
        """``text`` without this transport's key."""
        return self._redact(text)


def status_detail(error: anthropic.APIStatusError) -> str:
    """``HTTP 529 overloaded_error: Overloaded`` from Anthropic's error body, when it has one."""
    detail = f"HTTP {error.status_code}"
    body = error.body if isinstance(error.body, dict) else {}
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    if inner.get("type"):
        detail += f" {inner['type']}"
    if inner.get("message"):
        detail += f": {inner['message']}"
    return detail


def completion_of(message: Any, tool_name: str) -> Completion:
    """The ``Completion`` of a Messages API ``message`` (answered directly or in a batch)."""
    texts = [block.text for block in message.content if block.type == "text"]
    tool_inputs = [
        block.input
        for block in message.content
        if block.type == "tool_use" and block.name == tool_name and isinstance(block.input, dict)
    ]
    return Completion(
        text="\n".join(texts),
        input_tokens=message.usage.input_tokens,
        output_tokens=message.usage.output_tokens,
        data=tool_inputs[0] if tool_inputs else None,
        stop_reason=message.stop_reason,
    )
