"""What the judge and the tagger need from an LM API: one structured call, one attempt.

A ``Transport`` turns a ``StructuredRequest`` (instructions, a JSON schema for the answer)
into a ``Completion`` (the structured answer when the API produced one, the raw text
always, token counts, the answer's token probabilities when the API returned them). It
raises ``TransientLMError`` for failures worth retrying (rate limits, overload, 5xx,
timeouts, dropped connections) and ``LMError`` for the rest. Retries live in ``retry.py``,
so every API gets the same policy.

Error messages must be safe to log: transports build them from status codes and the
server's message, never from request headers, and pass them through ``redact``.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class StructuredRequest:
    """One question whose answer must be a JSON object matching ``schema``."""

    system: str
    user: str
    schema_name: str
    schema_description: str
    schema: dict[str, Any]
    max_tokens: int
    token_probabilities: bool = False
    """Whether the answer's token probabilities are of use (APIs that can give them do)."""


@dataclass(frozen=True)
class Token:
    """One generated token: its UTF-8 bytes (a token may hold part of a character), its log
    probability, and the most likely tokens the model could have produced in its place
    (``alternatives``, which usually include this one)."""

    text: bytes
    logprob: float
    alternatives: tuple[Token, ...] = ()


@dataclass(frozen=True)
class Completion:
    """An answer. ``data`` is the structured answer when the API returned one (tool input,
    JSON content); ``text`` is whatever plain text came with or instead of it. ``tokens``
    are the answer's tokens with their probabilities, when the API returned them (empty
    otherwise); joined they spell the model's output."""

    text: str
    input_tokens: int
    output_tokens: int
    data: dict[str, Any] | None = None
    stop_reason: str | None = None
    tokens: tuple[Token, ...] = ()

    @property
    def raw(self) -> str:
        """The answer as the model gave it, for the record."""
        if self.data is None:
            return self.text
        structured = json.dumps(self.data, ensure_ascii=False)
        return f"{self.text}\n{structured}" if self.text else structured


class LMError(Exception):
    """A call to an LM failed. The message is safe to log (no credentials)."""


class TransientLMError(LMError):
    """A failure that may go away: retry, after ``retry_after`` seconds if the server said.
    ``throttled``: the server refused the request to make the client slow down (429 rate
    limit, 529 overloaded), not because anything is wrong with it."""

    def __init__(
        self, message: str, retry_after: float | None = None, throttled: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled


class Transport(Protocol):
    model: str

    def complete(self, request: StructuredRequest) -> Completion:
        """Make one attempt; raise ``LMError`` (or ``TransientLMError``) on failure."""
        ...


RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Besides every 5xx (529 is Anthropic's "overloaded")."""
THROTTLING_STATUS = frozenset({429, 529})
"""Rate limited (every API), overloaded (Anthropic): slow down, then retry."""


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def status_error(status: int, detail: str, headers: Mapping[str, str]) -> LMError:
    """The error for an HTTP error response: transient, with the server's requested wait,
    when the status is worth retrying. ``detail`` must already be redacted."""
    if is_retryable_status(status):
        return TransientLMError(
            detail, parse_retry_after(headers), throttled=status in THROTTLING_STATUS
        )
    return LMError(detail)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Redactor:
    """Replaces secrets in text that may reach a log or an error record."""

    secrets: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, secrets: Iterable[str | None]) -> Redactor:
        return cls(tuple(s for s in secrets if s))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text
