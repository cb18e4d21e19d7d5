"""Anthropic's Message Batches API: many requests at once, at half the price per token.

A batch holds up to ``MAX_BATCH_REQUESTS`` Messages API requests (``MAX_BATCH_BYTES`` in
all), each named by a ``custom_id``; it ends within 24 hours (most within one), and only
then are its results readable, as JSONL in no particular order: each request
``succeeded`` (a message), ``errored`` (an API error), ``expired`` (not reached within
the 24 hours) or ``canceled``. ``MessageBatches`` sends the same requests the transport
would send one by one (``AnthropicTransport.params``) through the official SDK
(``client.messages.batches.create/retrieve/results``) and reads each answer as the
transport reads a message. The caller keeps the batch's id: it is all that is needed to
poll it again, from another process or after a restart.

Errors are the transport's: ``TransientLMError`` for those worth retrying (rate limits,
overload, 5xx, dropped connections), ``BatchGone`` for a batch the API no longer knows
(or whose results were deleted), ``LMError`` for the rest; messages never hold the key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import anthropic

from hyper_ls_backend.lm.anthropic_api import AnthropicTransport, completion_of, status_detail
from hyper_ls_backend.lm.transport import (
    Completion,
    LMError,
    StructuredRequest,
    TransientLMError,
    status_error,
)

MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 200 * 1024 * 1024
"""The API takes 256 MB per batch; requests are packed to stay well under it."""

ItemOutcome = Literal["succeeded", "errored", "expired", "canceled"]
BatchStatus = Literal["in_progress", "canceling", "ended"]


class BatchGone(LMError):
    """The batch (or its results) is no longer there: its requests will not be answered."""


@dataclass(frozen=True)
class BatchItem:
    custom_id: str
    """Unique in its batch: 1-64 letters, digits, ``-`` or ``_``."""
    request: StructuredRequest


@dataclass(frozen=True)
class BatchState:
    id: str
    status: BatchStatus
    created_at: datetime
    expires_at: datetime
    requests: int
    counts: dict[str, int]
    """Requests by state: ``processing``, ``succeeded``, ``errored``, ``expired``,
    ``canceled`` (all ``processing`` until the batch ends)."""

    @property
    def ended(self) -> bool:
        return self.status == "ended"


@dataclass(frozen=True)
class BatchResult:
    """One request's outcome: a completion when it succeeded, else why not."""

    custom_id: str
    outcome: ItemOutcome
    completion: Completion | None = None
    error: str | None = None


def pack(items: Sequence[BatchItem], transport: AnthropicTransport) -> list[list[BatchItem]]:
    """``items`` in consecutive groups that each fit one batch."""
    groups: list[list[BatchItem]] = [[]]
    size = 0
    for item in items:
        item_size = len(json.dumps(transport.params(item.request), ensure_ascii=False)) + 100
        if groups[-1] and (
            len(groups[-1]) >= MAX_BATCH_REQUESTS or size + item_size > MAX_BATCH_BYTES
        ):
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item_size
    return [group for group in groups if group]


class MessageBatches:
    """The Message Batches API on the client and with the model of an ``AnthropicTransport``."""

    def __init__(self, transport: AnthropicTransport) -> None:
        self.model = transport.model
        self.transport = transport
        self._batches = transport.client.messages.batches

    def submit(self, items: Sequence[BatchItem]) -> BatchState:
        """Create one batch of ``items`` (at most one batch's worth: see ``pack``)."""
        requests: list[Any] = [
            {"custom_id": item.custom_id, "params": self.transport.params(item.request)}
            for item in items
        ]
        with self._errors():
            return _state(self._batches.create(requests=requests))

    def state(self, batch_id: str) -> BatchState:
        with self._errors():
            return _state(self._batches.retrieve(batch_id))

    def results(self, batch_id: str, tool_name: str) -> Iterator[BatchResult]:
        """Every request's outcome, as the API streams them (the batch must have ended);
        ``tool_name`` is the tool the requests asked the answer for."""
        with self._errors():
            for line in self._batches.results(batch_id):
                yield self._result(line, tool_name)

    def _result(self, line: Any, tool_name: str) -> BatchResult:
        result = line.result
        if result.type == "succeeded":
            completion = completion_of(result.message, tool_name)
            return BatchResult(line.custom_id, "succeeded", completion=completion)
        if result.type == "errored":
            error = result.error.error
            detail = self.transport.redact(f"{error.type}: {error.message}")
            return BatchResult(line.custom_id, "errored", error=f"batch request {detail}")
        return BatchResult(line.custom_id, result.type, error=f"batch request {result.type}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The SDK's errors as the transport's (see the module docstring)."""
        redact = self.transport.redact
        try:
            yield
        except anthropic.APITimeoutError as error:
            raise TransientLMError("batch request timed out") from error
        except anthropic.APIConnectionError as error:
            raise TransientLMError(redact(f"connection error: {error}")) from error
        except anthropic.NotFoundError as error:
            raise BatchGone(redact(status_detail(error))) from error
        except anthropic.APIStatusError as error:
            detail = redact(status_detail(error))
            raise status_error(error.status_code, detail, error.response.headers) from error
        except anthropic.AnthropicError as error:
            raise LMError(redact(f"{type(error).__name__}: {error}")) from error


def _state(batch: Any) -> BatchState:
    counts = batch.request_counts
    by_state = {
        "processing": counts.processing,
        "succeeded": counts.succeeded,
        "errored": counts.errored,
        "expired": counts.expired,
        "canceled": counts.canceled,
    }
    return BatchState(
        id=batch.id,
        status=batch.processing_status,
        created_at=batch.created_at,
        expires_at=batch.expires_at,
        requests=sum(by_state.values()),
        counts=by_state,
    )
