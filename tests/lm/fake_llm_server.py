"""A real HTTP server that speaks just enough of two LM APIs for the lm tests.

It serves the Anthropic Messages API (``POST /v1/messages``) and an OpenAI-compatible
chat completions endpoint (``POST /v1/chat/completions``). What it answers is scripted:
queued ``Reply`` objects are served first, in order (a reply queued ``when`` a predicate
only to the requests it accepts: clients that send requests concurrently still get
predictable answers), then ``responder`` (a function of the request) if one is set. Every
request is recorded, and the server counts how many requests it is serving at once, so
tests can check a client's concurrency bound.
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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


class FakeLLMServer:
    """Start with ``start()``; ``base_url`` is ``http://127.0.0.1:<free port>``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.responder: Responder | None = None
        self.max_in_flight = 0
        self._queue: deque[tuple[Predicate | None, Reply]] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
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
        self._thread.join(timeout=5)

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
                reply = server._next_reply(recorded)
                if reply.delay and server._stopping.wait(reply.delay):
                    return
                payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = payload.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler
