"""Building the panel and the tagger from settings, and using them against live servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.lm import LRUTagCache
from hyper_ls_backend.lm.build import build_panel_and_tagger
from hyper_ls_backend.settings import Settings

from .fake_llm_server import (
    FakeLLMServer,
    Recorded,
    Reply,
    anthropic_tool_reply,
    openai_reply,
)
from .helpers import API_KEY, make_comparison

LOCAL_KEY = "local-SECRET-key-42"
FAST = {"hyper_judge_max_attempts": 1, "hyper_judge_timeout": 2.0}


@pytest.fixture(autouse=True)
def no_judge_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "HYPER_JUDGES", "HYPER_JUDGE_PROVIDER", "HYPER_TAGGER"):
        monkeypatch.delenv(name, raising=False)
    for name in ("MODEL", "BASE_URL", "API_KEY", "LOGPROBS"):
        monkeypatch.delenv(f"HYPER_JUDGE_{name}", raising=False)


@pytest.fixture
def other_server() -> Iterator[FakeLLMServer]:
    fake = FakeLLMServer().start()
    yield fake
    fake.stop()


def claude(request: Recorded) -> Reply:
    """Answers the judge with a tie and the tagger with tags."""
    if request.body["tools"][0]["name"] == "record_tags":
        return anthropic_tool_reply({"subject": "teaching"}, name="record_tags")
    return anthropic_tool_reply({"rationale": "r", "preference": "Tie"})


def local(request: Recorded) -> Reply:
    return openai_reply(json.dumps({"rationale": "r", "preference": "A-is-clearly-better"}))


def judges(*entries: dict[str, Any]) -> str:
    return json.dumps(list(entries))


def test_without_hyper_judges_the_panel_is_todays_single_judge(server: FakeLLMServer) -> None:
    server.responder = claude
    settings = Settings(anthropic_api_key=API_KEY, hyper_judge_base_url=server.base_url, **FAST)

    panel, tagger = build_panel_and_tagger(settings, tag_cache=LRUTagCache())

    assert panel is not None and tagger is not None
    assert [judge.model for judge in panel.judges] == ["claude-sonnet-4-6"]
    result = panel.judge(make_comparison())
    assert result.verdicts[0].label is Label.TIE
    assert tagger.tag("Explain recursion.").tags["subject"] == "teaching"
    assert all(r.path == "/v1/messages" for r in server.requests)


def test_no_judge_configured_builds_nothing() -> None:
    assert build_panel_and_tagger(Settings()) == (None, None)


def test_an_openai_judge_needs_its_endpoint_and_model() -> None:
    settings = Settings(hyper_judge_provider="openai", hyper_judge_model="m")

    with pytest.raises(ValueError, match="needs HYPER_JUDGE_BASE_URL and HYPER_JUDGE_MODEL"):
        build_panel_and_tagger(settings)


def test_a_mixed_panel_reads_each_key_from_the_variable_it_names(
    server: FakeLLMServer, other_server: FakeLLMServer
) -> None:
    server.responder = claude
    other_server.responder = local
    settings = Settings(
        hyper_judges=judges(
            {
                "provider": "anthropic",
                "model": "claude-haiku-4-5",
                "base_url": server.base_url,
                "api_key_env": "CLAUDE_KEY",
            },
            {
                "provider": "openai",
                "model": "local-model",
                "base_url": f"{other_server.base_url}/v1",
                "api_key_env": "LOCAL_KEY",
                "logprobs": False,
            },
        ),
        hyper_lm_prices={"local-model": (1.0, 2.0)},
        **FAST,
    )
    environ = {"CLAUDE_KEY": API_KEY, "LOCAL_KEY": LOCAL_KEY}

    panel, tagger = build_panel_and_tagger(settings, environ=environ)
    assert panel is not None and tagger is not None
    result = panel.judge(make_comparison())
    tagger.tag("Explain recursion.")

    assert [v.model for v in result.verdicts] == ["claude-haiku-4-5", "local-model"]
    assert [v.label for v in result.verdicts] == [Label.TIE, Label.TIE]  # local flips: A, B
    haiku, priced_local = (r.cost_usd for r in result.results)
    assert haiku == pytest.approx((200 * 1.0 + 40 * 5.0) / 1e6)
    assert priced_local == pytest.approx((160 * 1.0 + 30 * 2.0) / 1e6)
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in server.requests)
    assert all(r.headers["authorization"] == f"Bearer {LOCAL_KEY}" for r in other_server.requests)
    assert all("logprobs" not in r.body for r in other_server.requests)
    assert len(server.requests) == 3  # two orders, and the tagger on the primary's API


def test_an_anthropic_judge_defaults_to_anthropics_key(server: FakeLLMServer) -> None:
    server.responder = claude
    entry = {"provider": "anthropic", "model": "claude-sonnet-4-6", "base_url": server.base_url}
    settings = Settings(anthropic_api_key=API_KEY, hyper_judges=judges(entry), hyper_tagger=False)

    panel, tagger = build_panel_and_tagger(settings, environ={})

    assert panel is not None and tagger is None
    assert panel.judge(make_comparison()).verdicts[0].label is Label.TIE

    without = Settings(hyper_judges=judges(entry))
    with pytest.raises(ValueError, match=r"entry 1 of 1 \(model 'claude-sonnet-4-6'\) needs a key"):
        build_panel_and_tagger(without, environ={})


def test_a_missing_key_variable_is_named_and_no_key_is_shown() -> None:
    settings = Settings(
        hyper_judges=judges(
            {"provider": "openai", "model": "m", "base_url": "http://x/v1"},
            {"provider": "openai", "model": "n", "base_url": "http://y/v1", "api_key_env": "K2"},
        )
    )

    with pytest.raises(ValueError) as raised:
        build_panel_and_tagger(settings, environ={"K1": LOCAL_KEY})

    assert str(raised.value) == (
        "HYPER_JUDGES entry 2 of 2 (model 'n'): environment variable K2 named by api_key_env "
        "is not set"
    )


def test_hyper_judges_come_from_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch, other_server: FakeLLMServer
) -> None:
    other_server.responder = local
    entry = {
        "provider": "openai",
        "model": "local-model",
        "base_url": f"{other_server.base_url}/v1",
        "api_key_env": "MY_VLLM_KEY",
    }
    monkeypatch.setenv("HYPER_JUDGES", judges(entry))
    monkeypatch.setenv("MY_VLLM_KEY", LOCAL_KEY)

    panel, _ = build_panel_and_tagger(Settings(**FAST))

    assert panel is not None
    panel.judge(make_comparison())
    assert other_server.requests[0].headers["authorization"] == f"Bearer {LOCAL_KEY}"
    assert other_server.requests[0].body["logprobs"] is True  # HYPER_JUDGE_LOGPROBS default
