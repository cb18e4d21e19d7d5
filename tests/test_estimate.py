"""``hyper-ls estimate``: tokens of the requests the judge really sends, dollars, wall time."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from lm.fake_llm_server import FakeLLMServer, anthropic_tool_reply

from hyper_ls_backend.cli import main
from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.estimate import (
    CHARS_PER_TOKEN,
    TOOL_USE_TOKENS,
    JudgeModel,
    estimate,
)
from hyper_ls_backend.lm import AnthropicTransport, Judge, PriceTable, RetryPolicy
from hyper_ls_backend.settings import JudgeProvider, Settings

SONNET = JudgeModel("claude-sonnet-4-6", JudgeProvider.ANTHROPIC)
LOCAL = JudgeModel("local-model", JudgeProvider.OPENAI_COMPATIBLE)


def comparisons(n: int, words: int = 50) -> list[Comparison]:
    return [
        Comparison(
            id=f"c{i}",
            prompt=f"Question {i % 3}: how do tides work?",
            response_a="The moon pulls the sea. " * words,
            response_b="Wind makes tides. " * words,
        )
        for i in range(n)
    ]


def settings(**values: object) -> Settings:
    return Settings(hyper_tagger=False, hyper_judge_batch="auto", **values)


def planned(items: list[Comparison], judges: list[JudgeModel], **values: object):  # type: ignore[no-untyped-def]
    return estimate(
        items,
        judges,
        settings(**values),
        prices=PriceTable(),
        latency_s=2.0,
        concurrency=16,
    )


def test_the_judge_tokens_are_counted_on_the_requests_the_judge_sends(
    tmp_path: Path,
) -> None:
    server = FakeLLMServer().start()
    server.responder = lambda _: anthropic_tool_reply({"rationale": "r", "preference": "Tie"})
    try:
        transport = AnthropicTransport(
            api_key="sk-test", base_url=server.base_url, model=SONNET.model
        )
        judge = Judge(transport, retry=RetryPolicy(attempts=1))
        items = comparisons(3)
        for comparison in items:
            judge.judge(comparison)
        sent = [r.body for r in server.requests]
    finally:
        server.stop()

    def rule(body: dict) -> int:
        text = body["system"] + body["messages"][0]["content"] + json.dumps(body["tools"])
        return math.ceil(len(text) / CHARS_PER_TOKEN) + TOOL_USE_TOKENS

    plan = planned(items, [SONNET], hyper_max_text_chars=Settings().hyper_max_text_chars)
    (sonnet,) = plan.judges
    assert len(sent) == sonnet.requests == 6
    assert sonnet.input_tokens == sum(rule(body) for body in sent)


def test_dollars_per_judge_at_the_listed_and_the_batch_price_and_wall_time() -> None:
    items = comparisons(250)

    plan = planned(items, [SONNET, LOCAL])

    sonnet, local = plan.judges
    assert sonnet.requests == local.requests == 500
    assert sonnet.output_tokens == 500 * 80
    assert sonnet.cost_usd == pytest.approx(
        (sonnet.input_tokens * 3.0 + sonnet.output_tokens * 15.0) / 1e6
    )
    assert sonnet.batch_cost_usd == pytest.approx(sonnet.cost_usd / 2)
    assert not local.priced and local.cost_usd == local.batch_cost_usd == 0.0  # no batch API
    assert plan.cost_per_1000_comparisons_usd == pytest.approx(sonnet.cost_usd * 4)
    assert plan.batched  # 250 >= HYPER_JUDGE_BATCH_MIN
    assert plan.wall_time_s == pytest.approx(1000 * 2.0 / 16)
    assert plan.batch_wall_time_s == pytest.approx(3600.0)
    assert plan.fixed_prefix_tokens < 1024 and plan.prompt_caching.startswith("not used")


def test_longer_texts_cost_more_tokens_up_to_the_cut() -> None:
    short, long = planned(comparisons(4, 50), [SONNET]), planned(comparisons(4, 100), [SONNET])
    cut = planned(comparisons(4, 10_000), [SONNET], hyper_max_text_chars=1000)

    chars = 50 * (len("The moon pulls the sea. ") + len("Wind makes tides. "))
    added = 4 * 2 * chars / CHARS_PER_TOKEN
    assert long.input_tokens - short.input_tokens == pytest.approx(added, rel=0.01)
    assert cut.input_tokens < long.input_tokens  # each text cut to 1,000 characters
    assert not planned(comparisons(4), [SONNET]).batched  # under HYPER_JUDGE_BATCH_MIN


def test_the_tagger_is_counted_once_per_distinct_prompt_and_never_batched() -> None:
    tagged = estimate(
        comparisons(4),
        [SONNET],
        Settings(hyper_tagger=True),
        prices=PriceTable(),
        latency_s=2.0,
        concurrency=16,
    )

    assert tagged.tagger is not None and tagged.tagger.requests == 3  # prompts 0, 1, 2
    assert tagged.tagger.batch_cost_usd == tagged.tagger.cost_usd > 0


def test_the_estimate_command_prints_the_plan_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HYPER_JUDGES", "HYPER_JUDGE_MODEL", "HYPER_TAGGER", "HYPER_JUDGE_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(c.model_dump_json() + "\n" for c in comparisons(5)))

    code = main(
        [
            "estimate",
            str(data),
            "--judges",
            "claude-haiku-4-5",
            "--latency-s",
            "4",
            "--concurrency",
            "8",
        ]
    )

    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["comparisons"] == 5 and out["judges"][0]["model"] == "claude-haiku-4-5"
    assert out["concurrency"] == 8
    assert out["wall_time_s"] == pytest.approx(out["requests"] * 4 / 8)


def test_a_judge_names_its_provider_or_is_inferred() -> None:
    assert JudgeModel.parse("claude-opus-4-6") == JudgeModel("claude-opus-4-6", "anthropic")
    assert JudgeModel.parse("openai:gpt-4o") == JudgeModel("gpt-4o", "openai")
    assert JudgeModel.parse("qwen2.5-7b") == JudgeModel("qwen2.5-7b", "openai")
    with pytest.raises(ValueError, match=r"\[anthropic:"):
        JudgeModel.parse("vertex:gemini")
