"""The tagger: one call per prompt, normalised tags, cached by prompt."""

from __future__ import annotations

import json

import anthropic
import pytest

from hyper_ls_backend.lm import (
    TAG_NAMES,
    AnthropicTagger,
    LRUTagCache,
    OpenAICompatibleTagger,
)
from hyper_ls_backend.lm.tags import clean_tags

from .fake_llm_server import (
    FakeLLMServer,
    Reply,
    anthropic_error,
    anthropic_text_reply,
    anthropic_tool_reply,
    openai_reply,
)
from .helpers import API_KEY, FAST_RETRY, make_comparison

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


def tags_reply(answer: dict[str, object], **usage: int) -> Reply:
    return anthropic_tool_reply(answer, name="record_tags", **usage)


def test_one_call_returns_every_dimension_normalised(
    server: FakeLLMServer, anthropic_client: anthropic.Anthropic
) -> None:
    server.script(tags_reply(MESSY_ANSWER, input_tokens=300, output_tokens=60))
    tagger = AnthropicTagger(client=anthropic_client, retry=FAST_RETRY)

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
    server: FakeLLMServer, anthropic_client: anthropic.Anthropic
) -> None:
    server.script(tags_reply(MESSY_ANSWER))
    tagger = AnthropicTagger(client=anthropic_client, retry=FAST_RETRY)

    first = tagger.tag("Write a haiku about rain.")
    second = tagger.tag("Write a haiku about rain.")

    assert len(server.requests) == 1
    assert second.cached and second.tags == first.tags and second.cost_usd == 0.0


def test_cache_is_injectable_and_keyed_by_model(
    server: FakeLLMServer, anthropic_client: anthropic.Anthropic
) -> None:
    server.script(tags_reply(MESSY_ANSWER), tags_reply(MESSY_ANSWER))
    cache = LRUTagCache()
    haiku = AnthropicTagger(
        client=anthropic_client, model="claude-haiku-4-5", cache=cache, retry=FAST_RETRY
    )
    sonnet = AnthropicTagger(client=anthropic_client, cache=cache, retry=FAST_RETRY)

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
    server: FakeLLMServer, anthropic_client: anthropic.Anthropic
) -> None:
    server.responder = lambda request: tags_reply(MESSY_ANSWER)
    tagger = AnthropicTagger(client=anthropic_client, retry=FAST_RETRY)

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
    server: FakeLLMServer, anthropic_client: anthropic.Anthropic
) -> None:
    server.script(
        tags_reply({"safety_concern": "safe"}),
        anthropic_text_reply("I'd rather not."),
        anthropic_error(500),
        anthropic_error(500),
        anthropic_error(500),
    )
    tagger = AnthropicTagger(client=anthropic_client, retry=FAST_RETRY)

    partial = tagger.tag("partial")
    garbage = tagger.tag("garbage")
    failed = tagger.tag("down")

    assert partial.tags == {"safety_concern": "safe"} and "subject missing" in partial.notes
    assert tagger.tag("partial").cached
    assert garbage.tags == {} and (garbage.error or "").startswith("no JSON object in the answer")
    assert failed.tags == {} and failed.attempts == 3 and "HTTP 500" in (failed.error or "")


def test_openai_compatible_tagger_shares_the_pipeline(server: FakeLLMServer) -> None:
    server.script(openai_reply("```json\n" + json.dumps(MESSY_ANSWER) + "\n```"))
    tagger = OpenAICompatibleTagger(
        base_url=f"{server.base_url}/v1", model="qwen", api_key=API_KEY, retry=FAST_RETRY
    )

    result = tagger.tag("Summarise this: ...")

    assert result.tags == CLEAN_TAGS
    assert server.requests[0].body["response_format"]["json_schema"]["name"] == "record_tags"


def test_long_prompts_are_truncated_with_a_note(
    server: FakeLLMServer, anthropic_client: anthropic.Anthropic
) -> None:
    server.script(tags_reply(MESSY_ANSWER))
    tagger = AnthropicTagger(client=anthropic_client, retry=FAST_RETRY, max_text_chars=50)

    tagger.tag("y" * 1000)

    text = server.requests[0].user_text()
    assert "y" * 51 not in text
    assert "request was truncated to 50 characters" in text
