"""The replay judge server, over real HTTP: the backend's own judge client asks it, in both
answer orders, and gets each row's recorded verdict back in the order it was shown."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import data_dir
from processes import free_port, unavailable

from hyper_ls_backend.core.comparison import Comparison, parse_label
from hyper_ls_backend.core.dataset import read_comparisons
from hyper_ls_backend.eval.replay_judge import (
    ReplayJudge,
    RunningReplayJudge,
    start_replay_judge,
)
from hyper_ls_backend.lm import Judge, JudgeResult, OpenAICompatibleTransport, RetryPolicy
from hyper_ls_backend.lm.prompts import judge_request

PRD = "prd_vicuna80_panel.jsonl"
LONG = "Step one. " * 400


def row(row_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": row_id,
        "prompt": f"Question {row_id}: how do I learn to cook?",
        "response_a": f"First answer of {row_id}: start with eggs.",
        "response_b": f"Second answer of {row_id}: read a book.",
        **fields,
    }


def verdict(label: str | None, **fields: Any) -> dict[str, Any]:
    return {"label": label, "model": "gpt-4", **fields}


ROWS = [
    row("orders", judge=verdict("A", orders={"ab": "A-is-clearly-better", "ba": "A"})),
    row("coarse", judge=verdict("tie", orders={"ab": "A", "ba": "tie"})),
    row("biased", judge=verdict("tie", consistent=False)),
    row("steady", judge=verdict("B", consistent=True)),
    row("failed", judge=verdict(None)),
    row("half", judge=verdict("B", orders={"ab": "B-is-slightly-better", "ba": None})),
    row(
        "panel",
        judges=[
            verdict("A", orders={"ab": "A", "ba": "A"}),
            {"label": "B", "model": "claude", "orders": {"ab": "B-is-clearly-better", "ba": "B"}},
        ],
    ),
    row("long", response_a=LONG, judge=verdict("B", orders={"ab": "B", "ba": "B"})),
    # the same response on both sides, after different earlier turns
    row(
        "mirror",
        response_a="Same answer.",
        response_b="Same answer.",
        context_a=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Left."}],
        context_b=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Right."}],
        judge=verdict("B", orders={"ab": "B-is-clearly-better", "ba": "B-is-clearly-better"}),
    ),
    # two rows with the same responses, told apart by their prompts
    row("twin-1", response_a="Same A.", response_b="Same B.", judge=verdict("A", consistent=True)),
    row("twin-2", response_a="Same A.", response_b="Same B.", judge=verdict("B", consistent=True)),
]
BY_ID = {r["id"]: Comparison.model_validate(r) for r in ROWS}


@pytest.fixture(scope="module")
def rows() -> list[Comparison]:
    return list(BY_ID.values())


@pytest.fixture(scope="module")
def replay(rows: list[Comparison]) -> Iterator[RunningReplayJudge]:
    server = start_replay_judge(rows)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def second_judge(rows: list[Comparison]) -> Iterator[RunningReplayJudge]:
    server = start_replay_judge([BY_ID["panel"]], judge_index=1)
    yield server
    server.stop()


def judge_of(server: RunningReplayJudge, **options: Any) -> Judge:
    """The backend's judge client aimed at the server, one attempt per order."""
    transport = OpenAICompatibleTransport(base_url=server.base_url, model="replayed", timeout=10.0)
    return Judge(transport, retry=RetryPolicy(attempts=1), **options)


def judged(server: RunningReplayJudge, row_id: str, **options: Any) -> JudgeResult:
    return judge_of(server, **options).judge(BY_ID[row_id])


def post(server: RunningReplayJudge, body: Any) -> requests.Response:
    return requests.post(f"{server.base_url}/chat/completions", json=body, timeout=10)


def chat_body(comparison: Comparison, swapped: bool) -> dict[str, Any]:
    request = judge_request(comparison, swapped=swapped)
    messages = [{"role": "system", "content": request.system}]
    return {"model": "m", "messages": [*messages, {"role": "user", "content": request.user}]}


def preference(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["choices"][0]["message"]["content"])["preference"]


def test_the_order_shown_picks_the_recorded_answer_and_a_swapped_one_is_turned_around(
    replay: RunningReplayJudge,
) -> None:
    comparison = BY_ID["orders"]
    assert preference(post(replay, chat_body(comparison, swapped=False))) == ("A-is-clearly-better")
    # ba is recorded in the row's orientation (A better); shown swapped, A is the second
    assert preference(post(replay, chat_body(comparison, swapped=True))) == ("B-is-slightly-better")
    result = judged(replay, "orders")
    assert result.error is None
    assert result.verdict.orders.ab == "A-is-clearly-better"
    assert result.verdict.orders.ba == "A-is-slightly-better"
    assert result.verdict.consistent is True


def test_coarse_answers_are_sent_as_their_weaker_five_point_claim(
    replay: RunningReplayJudge,
) -> None:
    result = judged(replay, "coarse")
    assert (result.verdict.orders.ab, result.verdict.orders.ba) == ("A-is-slightly-better", "Tie")
    assert result.verdict.consistent is False
    # the replay gives back the recorded orders' labels, whatever the backend makes of them
    recorded = BY_ID["coarse"].judge.orders
    assert [parse_label(a) for a in result.verdict.orders.answers()] == recorded.labels()


def test_verdicts_without_orders_replay_their_consistency(replay: RunningReplayJudge) -> None:
    biased = judged(replay, "biased")
    assert (biased.verdict.orders.ab, biased.verdict.orders.ba) == (
        "A-is-slightly-better",
        "B-is-slightly-better",
    )
    assert biased.verdict.consistent is False
    steady = judged(replay, "steady")
    assert steady.verdict.label == "B"
    assert steady.verdict.consistent is True


def test_a_failed_verdict_is_a_server_error_and_the_judge_fails(
    replay: RunningReplayJudge,
) -> None:
    response = post(replay, chat_body(BY_ID["failed"], swapped=False))
    assert response.status_code == 500
    assert "failed" in response.json()["error"]["message"]
    result = judged(replay, "failed")
    assert result.failed
    assert "HTTP 500" in result.error
    # failed in one order only: the other order's answer stands alone
    half = judged(replay, "half")
    assert half.verdict.orders.ab == "B-is-slightly-better"
    assert half.verdict.orders.ba is None
    assert half.verdict.consistent is None
    assert "B-A order" in half.error


def test_the_judge_index_replays_another_judge_of_the_panel(
    replay: RunningReplayJudge, second_judge: RunningReplayJudge
) -> None:
    primary = judged(replay, "panel")
    other = judged(second_judge, "panel")
    assert primary.verdict.label == "A"
    assert other.verdict.label == "B"
    assert (other.verdict.orders.ab, other.verdict.orders.ba) == (
        "B-is-clearly-better",
        "B-is-slightly-better",
    )
    assert "claude" in other.calls[0].rationale
    with pytest.raises(ValueError, match="judge index 2"):
        ReplayJudge([BY_ID["panel"]], judge_index=2)


def test_truncated_responses_and_rows_sharing_their_responses_are_matched(
    replay: RunningReplayJudge,
) -> None:
    long = judged(replay, "long", max_text_chars=500)
    assert long.error is None
    assert long.verdict.label == "B"
    assert judged(replay, "twin-1").verdict.label == "A"
    # the same text on both sides: the order is read from the earlier turns shown first
    mirror = judged(replay, "mirror").verdict
    assert (mirror.orders.ab, mirror.orders.ba) == ("B-is-clearly-better", "B-is-clearly-better")
    assert judged(replay, "twin-2").verdict.label == "B"


def test_unknown_requests_get_a_400_that_says_why(replay: RunningReplayJudge) -> None:
    stranger = Comparison.model_validate(row("stranger"))
    response = post(replay, chat_body(stranger, swapped=False))
    assert response.status_code == 400
    assert "no dataset row has these two responses" in response.json()["error"]["message"]
    assert post(replay, {"model": "m"}).status_code == 400
    no_blocks = {"messages": [{"role": "user", "content": "Hello"}]}
    assert "no <response_a> block" in post(replay, no_blocks).json()["error"]["message"]
    # the twins' responses with another prompt: neither twin
    twin = BY_ID["twin-1"].model_copy(update={"prompt": "Another question entirely"})
    assert post(replay, chat_body(twin, swapped=False)).status_code == 400
    assert replay.judge.counts["unknown"] >= 4


def test_rows_that_cannot_be_told_apart_and_answer_differently_are_refused() -> None:
    same = row("same-1", judge=verdict("A", consistent=True))
    rows = [Comparison.model_validate(same), Comparison.model_validate({**same, "id": "same-2"})]
    other = Comparison.model_validate({**same, "id": "same-2", "judge": verdict("B")})
    agreeing = start_replay_judge(rows)
    differing = start_replay_judge([rows[0], other])
    try:
        assert preference(post(agreeing, chat_body(rows[0], swapped=True))) == (
            "B-is-slightly-better"
        )
        response = post(differing, chat_body(rows[0], swapped=False))
        assert response.status_code == 400
        assert "matches rows same-1, same-2 ambiguously" in response.json()["error"]["message"]
    finally:
        agreeing.stop()
        differing.stop()


def test_the_module_runs_as_a_server_on_the_port_given(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]), encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "hyper_ls_backend.eval.replay_judge", str(data)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--judge-index", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        deadline = time.monotonic() + 30
        while True:
            try:
                response = requests.post(url, json=chat_body(BY_ID["orders"], False), timeout=5)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "replay judge did not start"
                time.sleep(0.1)
        assert preference(response) == "A-is-clearly-better"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.data
def test_every_prd_verdict_comes_back_as_recorded_in_both_orders() -> None:
    path = data_dir() / PRD
    if not path.exists():
        unavailable(f"{path} not found (set HYPER_DATA_DIR)")
    rows = read_comparisons(path)
    server = start_replay_judge(rows, judge_index=3)
    try:
        results = judge_of(server).judge_many(rows, max_concurrency=16)
    finally:
        server.stop()
    assert server.judge.counts == {"answered": 2 * len(rows)}
    for comparison, result in zip(rows, results, strict=True):
        recorded = comparison.judges[3]
        assert [parse_label(a) for a in result.verdict.orders.answers()] == (
            recorded.orders.labels()
        ), comparison.id
        assert result.verdict.consistent == recorded.consistent, comparison.id
