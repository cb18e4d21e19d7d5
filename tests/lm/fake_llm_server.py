"""A real HTTP server that speaks just enough of two LM APIs for the lm tests.

It serves the Anthropic Messages API (``POST /v1/messages``), its Message Batches API
(``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}`` and ``.../results`` as
JSONL: see ``FakeBatch``) and an OpenAI-compatible chat completions endpoint
(``POST /v1/chat/completions``). What it answers is scripted:
queued ``Reply`` objects are served first, in order (a reply queued ``when`` a predicate
only to the requests it accepts: clients that send requests concurrently still get
predictable answers), then ``responder`` (a function of the request) if one is set. Every
request is recorded, and the server counts how many requests it is serving at once, so
tests can check a client's concurrency bound.

It answers as the real APIs' front ends do: HTTP/1.1 with connections kept alive, replies
sent without Nagle's delay (the headers and the body go in two small writes, and the second
may wait for the client to acknowledge the first), and a listen backlog for a burst of
connections (``http.server``'s default of 5 can refuse some of 64 opened at once, which the
client then tries again). ``benchmarks/judge_calls.py`` measures how long it takes to answer
(``docs/benchmarks.md``).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LISTEN_BACKLOG = 256
"""Connections waiting to be accepted: a client opening 64 at once must not be refused."""


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer. ``body`` is sent as JSON unless it is already a string."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering: longer than a client timeout makes it time out."""


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any

    def user_text(self) -> str:
        """The text of the last user message, for either API."""
        content = self.body["messages"][-1]["content"]
        if isinstance(content, str):
            return content
        return "".join(block.get("text", "") for block in content)


Responder = Callable[[Recorded], Reply]
Predicate = Callable[[Recorded], bool]


def anthropic_tool_reply(
    tool_input: dict[str, Any],
    *,
    name: str = "record_verdict",
    input_tokens: int = 100,
    output_tokens: int = 20,
    model: str = "claude-sonnet-4-5",
    text: str | None = None,
) -> Reply:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    content.append(
        {
            "type": "tool_use",
            "id": f"toolu_{uuid.uuid4().hex[:20]}",
            "name": name,
            "input": tool_input,
        }
    )
    return _anthropic_message(content, "tool_use", input_tokens, output_tokens, model)


def anthropic_text_reply(
    text: str,
    *,
    input_tokens: int = 100,
    output_tokens: int = 20,
    model: str = "claude-sonnet-4-5",
) -> Reply:
    content = [{"type": "text", "text": text}]
    return _anthropic_message(content, "end_turn", input_tokens, output_tokens, model)


def _anthropic_message(
    content: list[dict[str, Any]],
    stop_reason: str,
    input_tokens: int,
    output_tokens: int,
    model: str,
) -> Reply:
    return Reply(
        body={
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        },
        headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"},
    )


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def anthropic_error(
    status: int, message: str = "fake failure", *, retry_after: str | None = None
) -> Reply:
    """An error in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    body = {
        "type": "error",
        "error": {"type": ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    return Reply(status=status, body=body, headers=headers)


def openai_reply(
    content: str | None,
    *,
    prompt_tokens: int = 80,
    completion_tokens: int = 15,
    model: str = "local-model",
    logprobs: dict[str, Any] | None = None,
) -> Reply:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
    }
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return Reply(
        body={
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


SURE = math.log(0.999)
"""The log probability of every token but the one that chooses the preference's label."""


def openai_logprobs(
    content: str, choice: dict[str, float], *, merge_quote: bool = False
) -> dict[str, Any]:
    """``choices[0].logprobs`` as vLLM and llama.cpp return it for ``content``: one entry
    per token with its ``token``, ``logprob``, UTF-8 ``bytes`` and ``top_logprobs``.

    Tokens are words, runs of spaces and single punctuation marks; a non-ASCII character is
    split over two byte-level tokens (whose ``token`` text is not valid UTF-8 on its own, as
    vLLM shows it). Every token is near-certain except the first of the ``"preference"``
    value, whose alternatives are ``choice`` (first word of a value -> probability, e.g.
    ``{"B": 0.7, "A": 0.2, "Tie": 0.1}``, the value's own first word among them).
    ``merge_quote`` glues the value's opening quote to that token (``"B``)."""
    value_start = content.index('"', content.index(":", content.index('"preference"'))) + 1
    pieces = [(m.start(), m.group()) for m in re.finditer(r"\w+|\s+|[^\w\s]", content)]
    at = next(i for i, (start, _) in enumerate(pieces) if start == value_start)
    word = pieces[at][1]
    if merge_quote:
        pieces[at - 1 : at + 1] = [(value_start - 1, '"' + word)]
        at -= 1
    entries = []
    for i, (_, piece) in enumerate(pieces):
        if i == at:
            entries.append(_decision(piece[: -len(word)], word, choice))
        else:
            entries.extend(_sure(chunk) for chunk in _byte_chunks(piece))
    return {"content": entries}


def _byte_chunks(piece: str) -> list[bytes]:
    data = piece.encode()
    if len(data) == len(piece):
        return [data]
    return [data[: len(data) // 2], data[len(data) // 2 :]]


def _entry(data: bytes, logprob: float) -> dict[str, Any]:
    try:
        token = data.decode()
    except UnicodeDecodeError:
        token = "bytes:" + "".join(f"\\x{byte:02x}" for byte in data)
    return {"token": token, "logprob": logprob, "bytes": list(data)}


def _sure(data: bytes) -> dict[str, Any]:
    entry = _entry(data, SURE)
    return {**entry, "top_logprobs": [dict(entry)]}


def _decision(prefix: str, word: str, choice: dict[str, float]) -> dict[str, Any]:
    top = [
        _entry((prefix + first).encode(), math.log(probability))
        for first, probability in sorted(choice.items(), key=lambda item: -item[1])
    ]
    return {**_entry((prefix + word).encode(), math.log(choice[word])), "top_logprobs": top}


def openai_error(
    status: int, message: str = "fake failure", *, retry_after: str | None = None
) -> Reply:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    body = {"error": {"message": message, "type": "server_error", "code": None}}
    return Reply(status=status, body=body, headers=headers)


BATCH_LIFETIME = timedelta(hours=24)


@dataclass
class FakeBatch:
    """One Message Batch. It ends ``FakeLLMServer.batch_seconds`` after it was created, when
    first retrieved after that: each of its requests is then answered as a ``/v1/messages``
    request would be (scripted replies, then the responder), a 200 as ``succeeded`` and an
    error as ``errored`` with the error's body, except the requests ``expire_in_batch``
    accepts, which end ``expired`` (as those a real batch had not reached in 24 h).
    ``FakeLLMServer.expire`` ends a batch at once with every request expired."""

    id: str
    requests: list[dict[str, Any]]
    created: float
    created_at: datetime
    results: list[dict[str, Any]] | None = None
    ended_at: datetime | None = None
    retrieved: int = 0
    """Times it was retrieved: how often a client polled it."""

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if self.results is None:
            counts["processing"] = len(self.requests)
            return counts
        for line in self.results:
            counts[line["result"]["type"]] += 1
        return counts

    def body(self, base_url: str) -> dict[str, Any]:
        ended = self.results is not None
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": self.counts(),
            "created_at": self.created_at.isoformat(),
            "expires_at": (self.created_at + BATCH_LIFETIME).isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class FakeLLMServer:
    """Start with ``start()``; ``base_url`` is ``http://127.0.0.1:<free port>``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.batches: dict[str, FakeBatch] = {}
        self.batch_seconds = 0.0
        """How long a Message Batch takes to end."""
        self.expire_in_batch: Predicate | None = None
        """Batched requests that end ``expired`` instead of being answered."""
        self.refuse_batches: Reply | None = None
        """Set: every batch creation is answered with it (an error, say)."""
        self.responder: Responder | None = None
        self.max_in_flight = 0
        self._queue: deque[tuple[Predicate | None, Reply]] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._ending = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        """Kept alive by their clients, each served by a thread of its own until closed."""
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply, when: Predicate | None = None) -> None:
        with self._lock:
            self._queue.extend((when, reply) for reply in replies)

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a slow reply
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:  # a stopped server answers no one, not even on a kept-alive socket
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def expire(self, batch_id: str) -> None:
        """End the batch now, each of its requests not yet answered ``expired``."""
        with self._lock:
            batch = self.batches[batch_id]
            if batch.results is None:
                batch.results = [
                    {"custom_id": item["custom_id"], "result": {"type": "expired"}}
                    for item in batch.requests
                ]
                batch.ended_at = datetime.now(UTC)

    def batched_requests(self) -> int:
        """Requests received in Message Batches, over all batches."""
        with self._lock:
            return sum(len(batch.requests) for batch in self.batches.values())

    def _create_batch(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
        if self.refuse_batches is not None:
            return self.refuse_batches
        items = (recorded.body or {}).get("requests") or []
        ids = [item.get("custom_id", "") for item in items]
        if not items or len(set(ids)) < len(ids) or not all(map(CUSTOM_ID.fullmatch, ids)):
            return anthropic_error(400, "requests must be non-empty, with unique valid custom_ids")
        batch = FakeBatch(
            id=f"msgbatch_{uuid.uuid4().hex[:24]}",
            requests=items,
            created=time.monotonic(),
            created_at=datetime.now(UTC),
        )
        with self._lock:
            self.batches[batch.id] = batch
        return Reply(body=batch.body(self.base_url))

    def _batch(self, batch_id: str) -> FakeBatch | None:
        """The batch, ended if its time has come."""
        with self._ending:  # one retrieval ends it: its requests are answered once
            with self._lock:
                batch = self.batches.get(batch_id)
            if batch is None or batch.results is not None:
                return batch
            if time.monotonic() - batch.created < self.batch_seconds:
                return batch
            results = [self._batch_result(batch, item) for item in batch.requests]
            with self._lock:
                if batch.results is None:
                    batch.results, batch.ended_at = results, datetime.now(UTC)
            return batch

    def _batch_result(self, batch: FakeBatch, item: dict[str, Any]) -> dict[str, Any]:
        custom_id = item["custom_id"]
        request = Recorded(
            path=f"/v1/messages/batches/{batch.id}/requests/{custom_id}",
            headers={},
            body=item["params"],
        )
        if self.expire_in_batch is not None and self.expire_in_batch(request):
            return {"custom_id": custom_id, "result": {"type": "expired"}}
        reply = self._next_reply(request)
        body = reply.body if not isinstance(reply.body, str) else json.loads(reply.body)
        if reply.status == 200:
            return {"custom_id": custom_id, "result": {"type": "succeeded", "message": body}}
        return {"custom_id": custom_id, "result": {"type": "errored", "error": body}}

    def _get(self, path: str) -> tuple[Reply, str]:
        """(reply, content type) for a GET of a batch or its results."""
        match = re.fullmatch(r"/v1/messages/batches/(?P<id>[^/]+)(?P<results>/results)?", path)
        batch = self._batch(match["id"]) if match else None
        if batch is None:
            return anthropic_error(404, "batch not found"), "application/json"
        if not match["results"]:
            with self._lock:
                batch.retrieved += 1
            return Reply(body=batch.body(self.base_url)), "application/json"
        if batch.results is None:
            return anthropic_error(400, "batch has not ended"), "application/json"
        jsonl = "".join(json.dumps(line) + "\n" for line in batch.results)
        return Reply(body=jsonl), "application/binary"

    def _next_reply(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            for entry in self._queue:
                when, reply = entry
                if when is None or when(request):
                    self._queue.remove(entry)
                    return reply
        if self.responder is not None:
            return self.responder(request)
        return Reply(status=400, body={"error": {"message": "fake server: no scripted reply"}})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                reply, content_type = server._get(self.path.split("?")[0])
                self._send(reply, content_type)

            def do_POST(self) -> None:
                with server._lock:
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    self._serve()
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def _serve(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                recorded = Recorded(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
                if recorded.path.split("?")[0] == "/v1/messages/batches":
                    reply = server._create_batch(recorded)
                else:
                    reply = server._next_reply(recorded)
                if reply.delay and server._stopping.wait(reply.delay):
                    self.close_connection = True
                    return
                self._send(reply, "application/json")

            def _send(self, reply: Reply, content_type: str) -> None:
                payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = payload.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
