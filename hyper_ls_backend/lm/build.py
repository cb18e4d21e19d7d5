"""The judge panel and the tagger, built from ``Settings``: the edge of the lm package.

``HYPER_JUDGES`` lists the panel (primary first); unset, the panel is the one judge of
``HYPER_JUDGE_PROVIDER``/``HYPER_JUDGE_MODEL``/``HYPER_JUDGE_BASE_URL``/``HYPER_JUDGE_API_KEY``
/``ANTHROPIC_API_KEY``. Each listed judge's key is read, when the panel is built, from the
environment variable it names, and never appears in an error. The tagger shares the
primary judge's transport. Every judge is priced for its own model by one price table.
One ``AdaptiveLimiter`` of ``HYPER_JUDGE_CONCURRENCY`` slots is shared by every judge and
the tagger: it bounds the process's LM requests in flight, whatever the tasks and threads
asking.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hyper_ls_backend.lm.anthropic_api import (
    ANTHROPIC_BASE_URL,
    DEFAULT_ANTHROPIC_MODEL,
    AnthropicTransport,
)
from hyper_ls_backend.lm.batch import AdaptiveLimiter, LimitedTransport
from hyper_ls_backend.lm.cache import TagCache
from hyper_ls_backend.lm.judge import Judge
from hyper_ls_backend.lm.openai_api import OpenAICompatibleTransport
from hyper_ls_backend.lm.panel import JudgePanel
from hyper_ls_backend.lm.pricing import DEFAULT_PRICES, Price, PriceTable
from hyper_ls_backend.lm.retry import RetryPolicy
from hyper_ls_backend.lm.tagger import Tagger
from hyper_ls_backend.lm.transport import Transport
from hyper_ls_backend.settings import JudgeProvider, JudgeSpec, Settings


def build_panel_and_tagger(
    settings: Settings,
    *,
    tag_cache: TagCache | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[JudgePanel | None, Tagger | None]:
    """The panel (None when no judge is configured) and the tagger (None as well, or when
    ``HYPER_TAGGER`` is off). ``environ`` is where keys are looked up (``os.environ``
    unless given). Raises ``ValueError`` for a judge that cannot be built."""
    built = build_transports(settings, os.environ if environ is None else environ)
    if not built:
        return None, None
    limiter = AdaptiveLimiter(settings.hyper_judge_concurrency)
    transports = [LimitedTransport(transport, limiter) for transport in built]
    retry = RetryPolicy(
        attempts=settings.hyper_judge_max_attempts,
        rate_limit_wait=settings.hyper_judge_rate_limit_wait,
    )
    prices = PriceTable(
        {**DEFAULT_PRICES, **{m: Price(*rates) for m, rates in settings.hyper_lm_prices.items()}}
    )
    chars = settings.hyper_max_text_chars
    panel = JudgePanel(
        [Judge(t, prices=prices, retry=retry, max_text_chars=chars) for t in transports]
    )
    tagger = (
        Tagger(transports[0], cache=tag_cache, prices=prices, retry=retry, max_text_chars=chars)
        if settings.hyper_tagger
        else None
    )
    return panel, tagger


def build_transports(settings: Settings, environ: Mapping[str, str]) -> list[Transport]:
    """One transport per judge, primary first; empty when no judge is configured."""
    if settings.hyper_judges is not None:
        count = len(settings.hyper_judges)
        return [
            _listed_transport(settings, spec, environ, f"HYPER_JUDGES entry {n} of {count}")
            for n, spec in enumerate(settings.hyper_judges, 1)
        ]
    provider = settings.judge_provider
    if provider is JudgeProvider.ANTHROPIC:
        key = settings.anthropic_api_key or settings.hyper_judge_api_key
        return [
            AnthropicTransport(
                api_key=key.get_secret_value() if key else None,
                base_url=settings.hyper_judge_base_url or ANTHROPIC_BASE_URL,
                model=settings.hyper_judge_model or DEFAULT_ANTHROPIC_MODEL,
                timeout=settings.hyper_judge_timeout,
            )
        ]
    if provider is JudgeProvider.OPENAI_COMPATIBLE:
        if not (settings.hyper_judge_base_url and settings.hyper_judge_model):
            raise ValueError(
                "HYPER_JUDGE_PROVIDER=openai needs HYPER_JUDGE_BASE_URL and HYPER_JUDGE_MODEL"
            )
        key = settings.hyper_judge_api_key
        return [
            OpenAICompatibleTransport(
                base_url=settings.hyper_judge_base_url,
                model=settings.hyper_judge_model,
                api_key=key.get_secret_value() if key else None,
                timeout=settings.hyper_judge_timeout,
                logprobs=settings.hyper_judge_logprobs,
            )
        ]
    return []


def _listed_transport(
    settings: Settings, spec: JudgeSpec, environ: Mapping[str, str], where: str
) -> Transport:
    key = _key(settings, spec, environ, where)
    if spec.provider == JudgeProvider.ANTHROPIC:
        if key is None:
            raise ValueError(
                f"{where} (model {spec.model!r}) needs a key: set ANTHROPIC_API_KEY, or name "
                "another variable with api_key_env"
            )
        return AnthropicTransport(
            api_key=key,
            base_url=spec.base_url or ANTHROPIC_BASE_URL,
            model=spec.model,
            timeout=settings.hyper_judge_timeout,
        )
    assert spec.base_url is not None  # JudgeSpec requires it for openai
    return OpenAICompatibleTransport(
        base_url=spec.base_url,
        model=spec.model,
        api_key=key,
        timeout=settings.hyper_judge_timeout,
        logprobs=settings.hyper_judge_logprobs if spec.logprobs is None else spec.logprobs,
    )


def _key(settings: Settings, spec: JudgeSpec, environ: Mapping[str, str], where: str) -> str | None:
    """The judge's key: from the variable it names (which must be set), else Anthropic's
    usual one for an Anthropic judge, else none."""
    if spec.api_key_env is not None:
        key = environ.get(spec.api_key_env)
        if not key:
            raise ValueError(
                f"{where} (model {spec.model!r}): environment variable {spec.api_key_env} "
                "named by api_key_env is not set"
            )
        return key
    if spec.provider == JudgeProvider.ANTHROPIC and settings.anthropic_api_key:
        return settings.anthropic_api_key.get_secret_value()
    return None
