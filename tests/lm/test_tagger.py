"""The tagger: one call per prompt, normalised tags, cached by prompt."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.core.features import OPEN_TAG_DIMENSIONS, TAG_VOCABULARY
from hyper_ls_backend.lm import (
    FREE_TEXT_TAGS,
    TAG_NAMES,
    AnthropicTransport,
    LRUTagCache,
    OpenAICompatibleTransport,
)
from hyper_ls_backend.lm.prompts import TAGGER_SYSTEM, TAGS_SCHEMA
from hyper_ls_backend.lm.tags import clean_tags

from .fake_llm_server import (
    FakeLLMServer,
    Reply,
    anthropic_error,
    anthropic_text_reply,
    anthropic_tool_reply,
    openai_reply,
)
from .helpers import make_comparison, make_judge, make_tagger

MESSY_ANSWER = {
    "Safety Concern": "Moderate",
    "complexity_of_intents": "medium",
    "expertise": "Expert Domain",
    "open-endedness": "LOW",
    "format_constraints": True,
    "context_material": "no",
    "subject": "  Constitutional   Law ",
    "language": "EN",
}
CLEAN_TAGS = {
    "safety_concern": "moderate",
    "complexity_of_intents": "moderate",
    "expertise": "expert_domain",
    "open_endedness": "low",
    "format_constraints": "yes",
    "context_material": "no",
    "subject": "constitutional law",
    "language": "english",
}


AnthropicFactory = Callable[..., AnthropicTransport]
OpenAIFactory = Callable[..., OpenAICompatibleTransport]


def tags_reply(answer: dict[str, object], **usage: int) -> Reply:
    return anthropic_tool_reply(answer, name="record_tags", **usage)


def test_one_call_returns_every_dimension_normalised(
    server: FakeLLMServer, anthropic_transport: AnthropicFactory
) -> None:
    server.script(tags_reply(MESSY_ANSWER, input_tokens=300, output_tokens=60))
    tagger = make_tagger(anthropic_transport())

    result = tagger.tag("Is it legal to record a phone call in Germany? Answer in 3 bullets.")

    assert result.tags == CLEAN_TAGS
    assert result.notes == ()
    assert result.error is None and not result.cached
    assert result.cost_usd == pytest.approx((300 * 3.0 + 60 * 15.0) / 1e6)
    body = server.requests[0].body
    assert body["tool_choice"] == {"type": "tool", "name": "record_tags"}
    assert set(body["tools"][0]["input_schema"]["required"]) == set(TAG_NAMES)
    assert make_comparison().with_tags(result.tags).tags == CLEAN_TAGS


def test_second_call_for_the_same_prompt_makes_no_request(
    server: FakeLLMServer, anthropic_transport: AnthropicFactory
) -> None:
    server.script(tags_reply(MESSY_ANSWER))
    tagger = make_tagger(anthropic_transport())

    first = tagger.tag("Write a haiku about rain.")
    second = tagger.tag("Write a haiku about rain.")

    assert len(server.requests) == 1
    assert second.cached and second.tags == first.tags and second.cost_usd == 0.0


def test_cache_is_injectable_and_keyed_by_model(
    server: FakeLLMServer, anthropic_transport: AnthropicFactory
) -> None:
    server.script(tags_reply(MESSY_ANSWER), tags_reply(MESSY_ANSWER))
    cache = LRUTagCache()
    haiku = make_tagger(anthropic_transport(model="claude-haiku-4-5"), cache=cache)
    sonnet = make_tagger(anthropic_transport(), cache=cache)

    haiku.tag("same prompt")
    haiku.tag("same prompt")
    sonnet.tag("same prompt")

    assert len(server.requests) == 2
    assert len(cache) == 2


def test_lru_forgets_the_least_recently_used() -> None:
    cache = LRUTagCache(maxsize=2)
    cache.put("a", {"x": "1"})
    cache.put("b", {"x": "2"})
    cache.get("a")
    cache.put("c", {"x": "3"})

    assert cache.get("b") is None
    assert cache.get("a") == {"x": "1"} and cache.get("c") == {"x": "3"}


def test_tag_many_tags_each_distinct_prompt_once(
    server: FakeLLMServer, anthropic_transport: AnthropicFactory
) -> None:
    server.responder = lambda request: tags_reply(MESSY_ANSWER)
    tagger = make_tagger(anthropic_transport())

    results = tagger.tag_many(["p1", "p2", "p1", "p3", "p2"], max_concurrency=3)

    assert len(results) == 5 and all(r.tags == CLEAN_TAGS for r in results)
    assert sorted(r.user_text().split("\n")[1] for r in server.requests) == ["p1", "p2", "p3"]


def test_unknown_values_are_dropped_with_a_note() -> None:
    answer = {
        **MESSY_ANSWER,
        "safety_concern": "extreme",
        "language": "42",
        "subject": "",
        "mood": "happy",
    }
    del answer["expertise"]

    cleaned = clean_tags(answer)

    assert set(cleaned.tags) == set(TAG_NAMES) - {
        "safety_concern",
        "language",
        "subject",
        "expertise",
    }
    notes = " | ".join(cleaned.notes)
    assert "safety_concern='extreme' dropped (expected one of safe, low, moderate, high)" in notes
    assert "language='42' dropped" in notes
    assert "expertise missing" in notes
    assert "unknown tag 'mood' ignored" in notes


def test_partial_answers_are_kept_and_cached_but_failures_are_not(
    server: FakeLLMServer, anthropic_transport: AnthropicFactory
) -> None:
    server.script(
        tags_reply({"safety_concern": "safe"}),
        anthropic_text_reply("I'd rather not."),
        anthropic_error(500),
        anthropic_error(500),
        anthropic_error(500),
    )
    tagger = make_tagger(anthropic_transport())

    partial = tagger.tag("partial")
    garbage = tagger.tag("garbage")
    failed = tagger.tag("down")

    assert partial.tags == {"safety_concern": "safe"} and "subject missing" in partial.notes
    assert tagger.tag("partial").cached
    assert garbage.tags == {} and (garbage.error or "").startswith("no JSON object in the answer")
    assert failed.tags == {} and failed.attempts == 3 and "HTTP 500" in (failed.error or "")


def test_openai_compatible_tagger_shares_the_pipeline(
    server: FakeLLMServer, openai_transport: OpenAIFactory
) -> None:
    server.script(openai_reply("```json\n" + json.dumps(MESSY_ANSWER) + "\n```"))
    tagger = make_tagger(openai_transport(model="qwen"))

    result = tagger.tag("Summarise this: ...")

    assert result.tags == CLEAN_TAGS
    assert server.requests[0].body["response_format"]["json_schema"]["name"] == "record_tags"


def test_long_prompts_are_truncated_with_a_note(
    server: FakeLLMServer, anthropic_transport: AnthropicFactory
) -> None:
    server.script(tags_reply(MESSY_ANSWER))
    tagger = make_tagger(anthropic_transport(), max_text_chars=50)

    tagger.tag("y" * 1000)

    text = server.requests[0].user_text()
    assert "y" * 51 not in text
    assert "request was truncated to 50 characters" in text


def test_one_transport_serves_the_judge_and_the_tagger(
    server: FakeLLMServer, anthropic_transport: AnthropicFactory
) -> None:
    tie = anthropic_tool_reply({"rationale": "even", "preference": "Tie"})
    server.script(tie, tie, tags_reply(MESSY_ANSWER))
    transport = anthropic_transport(model="claude-haiku-4-5")
    judge, tagger = make_judge(transport), make_tagger(transport)

    judged = judge.judge(make_comparison())
    tagged = tagger.tag("Explain recursion to a child.")

    assert judged.verdict.label is Label.TIE and judged.verdict.model == "claude-haiku-4-5"
    assert tagged.tags == CLEAN_TAGS and tagger.model == judge.model
    assert [r.body["model"] for r in server.requests] == ["claude-haiku-4-5"] * 3


def test_tag_vocabulary_is_cores() -> None:
    assert set(FREE_TEXT_TAGS) <= set(OPEN_TAG_DIMENSIONS)
    assert tuple(TAG_VOCABULARY) + FREE_TEXT_TAGS == TAG_NAMES
    properties = TAGS_SCHEMA["properties"]
    assert {name: tuple(properties[name]["enum"]) for name in TAG_VOCABULARY} == TAG_VOCABULARY
    assert TAGS_SCHEMA["required"] == list(TAG_NAMES)
    for name, values in TAG_VOCABULARY.items():
        assert f"- {name}: " in TAGGER_SYSTEM and ", ".join(values) in TAGGER_SYSTEM
    for name in FREE_TEXT_TAGS:
        assert f"- {name}: " in TAGGER_SYSTEM
