"""A judge server that replays a labelled dataset's real verdicts.

It speaks the OpenAI-compatible ``POST /v1/chat/completions`` the backend's
``OpenAICompatibleTransport`` sends, so the real backend can be run against real judge
behaviour (position bias, ties, disagreeing judges) without an LM. For each request it
finds the dataset row whose two responses are the ones shown (the ``<response_a>`` and
``<response_b>`` blocks of ``lm/prompts.py``), sees whether they are shown in the row's
order or swapped (for a row whose two responses are the same text, by where each side's
earlier turns appear), and answers that row's recorded verdict for that order:

- a verdict with ``orders``: ``ab`` when shown in the row's order, ``ba`` (recorded in the
  row's orientation) turned back into the shown orientation when swapped; a coarse answer
  ("A", "B", "tie") is sent as its weaker 5-point claim ("A-is-slightly-better", "Tie"),
  a 5-point one as it is; an order recorded as null fails (HTTP 500);
- a verdict without ``orders``: its ``label`` in both orders, or, when ``consistent`` is
  false, "the first shown is better" in both (so the backend sees the same flip);
- a failed verdict (``label`` null) or a row with no verdict at the index: HTTP 500, so the
  backend's retry and failure path runs.

``judge_index`` chooses which verdict of a row's ``judges`` panel is replayed (0, the
primary, is ``judge`` when there is no panel): two servers on one file with different
indexes are two judges with different verdict patterns. Rows that share their responses are
told apart by their prompts and earlier turns. A request that matches no row, or several
whose answers differ, is answered 400 with the reason. The server listens on 127.0.0.1
only.

Start it in-process with ``start_replay_judge(path)`` or as
``python -m hyper_ls_backend.eval.replay_judge DATA.jsonl --port P [--judge-index K]``.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hyper_ls_backend.core.comparison import (
    FIVE_POINT_SCALE,
    Comparison,
    JudgeVerdict,
    Label,
)
from hyper_ls_backend.core.dataset import read_comparisons

LOOPBACK = "127.0.0.1"
KEY_CHARS = 200
"""Normalised characters of a response that index it. The backend cuts long texts (at
``HYPER_MAX_TEXT_CHARS``, far beyond this), so a shown response is matched by prefix."""
START_TIMEOUT = 10.0

FIVE_POINT_OF: dict[str, str] = {
    Label.A.value: "A-is-slightly-better",
    Label.B.value: "B-is-slightly-better",
    Label.TIE.value: "Tie",
}
"""A coarse answer as the 5-point answer that claims least."""
SWAP: dict[str, str] = {
    "A-is-clearly-better": "B-is-clearly-better",
    "A-is-slightly-better": "B-is-slightly-better",
    "Tie": "Tie",
    "B-is-slightly-better": "A-is-slightly-better",
    "B-is-clearly-better": "A-is-clearly-better",
}
FIRST_SHOWN_BETTER = "A-is-slightly-better"
"""What a position-biased judge says in whichever order it is asked."""

_BLOCK = {
    name: re.compile(rf"<{name}>\n(.*?)\n</{name}>", re.DOTALL)
    for name in ("response_a", "response_b")
}
_TRUNCATION_NOTE = re.compile(
    r"\n\[\.\.\. truncated: showing the first [\d,]+ of [\d,]+ characters\]$"
)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Whitespace collapsed: the same text however the request was laid out."""
    return _SPACE.sub(" ", text).strip()


class ReplayError(Exception):
    """A request the replay cannot answer with a verdict; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Shown:
    """A row as one request shows it: ``swapped`` when its response B is shown first."""

    row: Comparison
    swapped: bool


def answer_for(verdict: JudgeVerdict | None, swapped: bool) -> str:
    """The 5-point answer ``verdict`` gives in the shown orientation; ``ReplayError`` (500)
    for a verdict that failed in this order."""
    if verdict is None or verdict.failed:
        raise ReplayError(500, "replayed verdict failed: the judge gave no label")
    if verdict.orders is not None:
        recorded = verdict.orders.ba if swapped else verdict.orders.ab
        if recorded is None:
            order = "B-A" if swapped else "A-B"
            raise ReplayError(500, f"replayed verdict failed in the {order} order")
        five_point = recorded if recorded in FIVE_POINT_SCALE else FIVE_POINT_OF[recorded]
        return SWAP[five_point] if swapped else five_point
    if verdict.consistent is False:
        return FIRST_SHOWN_BETTER
    five_point = FIVE_POINT_OF[verdict.label.value]
    return SWAP[five_point] if swapped else five_point


@dataclass
class ReplayJudge:
    """The rows of one dataset, indexed by their responses, and the verdict replayed.

    ``counts`` tallies the outcome of every request (``answered``, ``failed``,
    ``unknown``), for reports.
    """

    rows: Sequence[Comparison]
    judge_index: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    _index: dict[tuple[str, str], list[Shown]] = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.judge_index < 0:
            raise ValueError("judge_index must be 0 or more")
        if self.rows and all(self.verdict(row) is None for row in self.rows):
            raise ValueError(f"no row has a verdict at judge index {self.judge_index}")
        index: dict[tuple[str, str], list[Shown]] = defaultdict(list)
        for row in self.rows:
            a, b = _key(row.response_a), _key(row.response_b)
            index[(a, b)].append(Shown(row, swapped=False))
            index[(b, a)].append(Shown(row, swapped=True))
        self._index = dict(index)

    def verdict(self, row: Comparison) -> JudgeVerdict | None:
        """The replayed verdict of ``row``: its panel's ``judge_index``-th (the primary is
        ``judge`` when there is no panel)."""
        verdicts = row.judges or ([row.judge] if row.judge is not None else [])
        return verdicts[self.judge_index] if self.judge_index < len(verdicts) else None

    def find(self, text: str) -> Shown:
        """The row a judge request's text shows, and in which order; ``ReplayError`` (400)
        when no row, or several with different answers, match."""
        blocks = []
        for name, pattern in _BLOCK.items():
            match = pattern.search(text)
            if match is None:
                raise ReplayError(400, f"replay judge: the request has no <{name}> block")
            blocks.append(normalise(_TRUNCATION_NOTE.sub("", match[1])))
        first, second = blocks
        normalised_text = normalise(text)
        matches: dict[str, Shown] = {}
        for shown in self._index.get((first[:KEY_CHARS], second[:KEY_CHARS]), []):
            if not _shows(shown, first, second, normalised_text):
                continue
            if shown.row.id in matches:  # both orientations: the two responses are the same
                shown = Shown(shown.row, _swapped_by_context(shown.row, normalised_text))
            matches[shown.row.id] = shown
        if not matches:
            raise ReplayError(
                400,
                "replay judge: no dataset row has these two responses "
                f"(first shown starts {first[:60]!r}, second {second[:60]!r})",
            )
        answers = {self._answer_or_error(shown) for shown in matches.values()}
        if len(answers) > 1:
            ids = ", ".join(matches)
            raise ReplayError(400, f"replay judge: the request matches rows {ids} ambiguously")
        return next(iter(matches.values()))

    def answer(self, body: Any) -> tuple[Shown, str]:
        """The row a chat completions request body shows and the 5-point answer to give;
        raises ``ReplayError``."""
        try:
            shown = self.find(request_text(body))
        except ReplayError:
            self._count("unknown")
            raise
        try:
            preference = answer_for(self.verdict(shown.row), shown.swapped)
        except ReplayError:
            self._count("failed")
            raise
        self._count("answered")
        return shown, preference

    def _answer_or_error(self, shown: Shown) -> str:
        try:
            return answer_for(self.verdict(shown.row), shown.swapped)
        except ReplayError as error:
            return f"error: {error}"

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1


def _key(response: str) -> str:
    return normalise(response)[:KEY_CHARS]


def _shows(shown: Shown, first: str, second: str, text: str) -> bool:
    """Whether the request shows exactly this row: both responses (a shown one may be cut
    short) and every other text of the row (prompt, earlier turns), which tells apart rows
    that share their responses."""
    row = shown.row
    a, b = (second, first) if shown.swapped else (first, second)
    if not (normalise(row.response_a).startswith(a) and normalise(row.response_b).startswith(b)):
        return False
    others = [row.prompt, *(turn.content for turn in (*row.context_a, *row.context_b))]
    return all(normalise(other)[:KEY_CHARS] in text for other in others)


def _swapped_by_context(row: Comparison, text: str) -> bool:
    """For a row whose two responses are the same text: which side's earlier turns are shown
    first (the first turn where the sides differ tells). Not swapped when nothing tells."""
    for turn_a, turn_b in zip(row.context_a, row.context_b, strict=False):
        a, b = normalise(turn_a.content)[:KEY_CHARS], normalise(turn_b.content)[:KEY_CHARS]
        if a != b:
            return 0 <= text.find(b) < text.find(a)
    return False


def request_text(body: Any) -> str:
    """Every message's text of a chat completions request, joined."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ReplayError(400, "replay judge: expected a chat completions body with messages")
    parts = []
    for message in body["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                block["text"]
                for block in content
                if isinstance(block, dict) and isinstance(block.get("text"), str)
            )
    return "\n".join(parts)


def build_app(judge: ReplayJudge) -> FastAPI:
    app = FastAPI(title="replay judge", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "replay judge: the body is not JSON")
        try:
            shown, preference = judge.answer(body)
        except ReplayError as error:
            return _error(error.status, str(error))
        verdict = judge.verdict(shown.row)
        order = "B-A" if shown.swapped else "A-B"
        content = {
            "rationale": (
                f"replayed: {verdict.model if verdict else 'judge'} on {shown.row.id}, "
                f"{order} order"
            ),
            "preference": preference,
        }
        return JSONResponse(_completion(body.get("model"), content))

    return app


def _completion(model: Any, content: dict[str, str]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-replay-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) else "replay",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": json.dumps(content)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _error(status: int, message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "replay_error", "code": status}}
    return JSONResponse(body, status_code=status)


@dataclass
class RunningReplayJudge:
    """A replay judge serving on loopback; ``base_url`` is what ``HYPER_JUDGE_BASE_URL``
    takes (it ends in ``/v1``)."""

    judge: ReplayJudge
    port: int
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=START_TIMEOUT)


def start_replay_judge(
    data: str | Path | Sequence[Comparison], judge_index: int = 0, port: int = 0
) -> RunningReplayJudge:
    """Serve the verdicts of ``data`` (a pairs-format JSONL file, or its rows) on
    127.0.0.1, in a background thread; ``port`` 0 takes a free one."""
    rows = read_comparisons(data) if isinstance(data, str | Path) else list(data)
    judge = ReplayJudge(rows, judge_index)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    config = uvicorn.Config(build_app(judge), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the replay judge server did not start")
        time.sleep(0.01)
    return RunningReplayJudge(judge, sock.getsockname()[1], server, thread)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hyper_ls_backend.eval.replay_judge",
        description="Serve a dataset's recorded judge verdicts as an OpenAI-compatible "
        "judge on 127.0.0.1.",
    )
    parser.add_argument("data", type=Path, help="comparisons in the HyPER pairs format (JSONL)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--judge-index",
        type=int,
        default=0,
        help="which verdict of each row's judges panel to replay (0: the primary)",
    )
    args = parser.parse_args(argv)
    judge = ReplayJudge(read_comparisons(args.data), args.judge_index)
    print(
        f"replaying judge {args.judge_index} of {len(judge.rows)} comparisons at "
        f"http://{LOOPBACK}:{args.port}/v1",
        flush=True,
    )
    uvicorn.run(build_app(judge), host=LOOPBACK, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
