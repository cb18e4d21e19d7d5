"""The descriptive tagger: one LM call per prompt describes it along HyPER's dimensions.

Results are cached by a hash of (prompt version, model, prompt), so a prompt shared by
many comparisons, or seen again after a restart when storage backs the cache, is tagged
once. Only clean answers are cached; a failed call is retried on the next request.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from hyper_ls_backend.lm.batch import map_bounded
from hyper_ls_backend.lm.cache import LRUTagCache, TagCache
from hyper_ls_backend.lm.parsing import answer_object
from hyper_ls_backend.lm.pricing import PriceTable
from hyper_ls_backend.lm.prompts import DEFAULT_MAX_TEXT_CHARS, tagger_request
from hyper_ls_backend.lm.retry import RetryPolicy, call_with_retries
from hyper_ls_backend.lm.tags import clean_tags
from hyper_ls_backend.lm.transport import Transport

log = logging.getLogger(__name__)

TAGGER_PROMPT_VERSION = "1"
"""Bump when the tagger's instructions change, so cached tags are not reused."""


class TagResult(BaseModel):
    """Tags for one prompt: ``tags`` is ready for ``Comparison.with_tags``."""

    model_config = ConfigDict(frozen=True)

    tags: dict[str, str]
    notes: tuple[str, ...] = ()
    """Values dropped or missing from the answer."""
    cached: bool = False
    raw: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    error: str | None = None


class Tagger:
    """A tagger over any ``Transport`` (shareable with a ``Judge``). Thread-safe when its
    cache is."""

    def __init__(
        self,
        transport: Transport,
        *,
        cache: TagCache | None = None,
        prices: PriceTable | None = None,
        retry: RetryPolicy | None = None,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        max_output_tokens: int = 512,
    ) -> None:
        self._transport = transport
        self._cache: TagCache = cache if cache is not None else LRUTagCache()
        self._prices = prices or PriceTable()
        self._retry = retry or RetryPolicy()
        self._max_text_chars = max_text_chars
        self._max_output_tokens = max_output_tokens

    @property
    def model(self) -> str:
        return self._transport.model

    def cache_key(self, prompt: str) -> str:
        material = f"{TAGGER_PROMPT_VERSION}\0{self.model}\0{prompt}"
        return hashlib.sha256(material.encode()).hexdigest()

    def tag(self, prompt: str) -> TagResult:
        key = self.cache_key(prompt)
        cached = self._cache.get(key)
        if cached is not None:
            return TagResult(tags=cached, cached=True)
        request = tagger_request(
            prompt, max_chars=self._max_text_chars, max_tokens=self._max_output_tokens
        )
        outcome = call_with_retries(self._transport, request, self._retry)
        answered = TagResult(tags={}, **outcome.record(self._prices, self.model))
        completion = outcome.completion
        if completion is None:
            return answered
        answer = answer_object(completion)
        if answer is None:
            error = f"no JSON object in the answer (stop reason {completion.stop_reason})"
            return answered.model_copy(update={"error": error})
        cleaned = clean_tags(answer)
        if cleaned.notes:
            log.info("tagger answer cleaned: %s", "; ".join(cleaned.notes))
        if not cleaned.tags:
            return answered.model_copy(update={"notes": cleaned.notes, "error": "no valid tag"})
        self._cache.put(key, cleaned.tags)
        return answered.model_copy(update={"tags": cleaned.tags, "notes": cleaned.notes})

    def tag_many(self, prompts: Iterable[str], max_concurrency: int = 4) -> list[TagResult]:
        """Results in input order; each distinct prompt is tagged once."""
        prompts = list(prompts)
        distinct = list(dict.fromkeys(prompts))
        results = dict(zip(distinct, map_bounded(self.tag, distinct, max_concurrency), strict=True))
        return [results[prompt] for prompt in prompts]
