"""Talking to LMs: the judge and the tagger, their prompts, parsing, retries and cost.

Depends on core types, ``anthropic`` and ``requests`` only. Nothing here reads the
environment: the caller builds one transport (``AnthropicTransport`` or
``OpenAICompatibleTransport``) from its settings and injects it into a ``Judge`` and a
``Tagger``, which may share it::

    transport = AnthropicTransport(api_key=key, timeout=30.0)
    judge = Judge(transport, retry=RetryPolicy(attempts=4))
    tagger = Tagger(transport, cache=LRUTagCache())

Several judges, on any mix of APIs, make a ``JudgePanel`` (``panel.py``). ``build.py`` is
the one exception to the rule above: it builds the panel and the tagger from ``Settings``
and reads the API keys from the environment variables the settings name.
"""

from hyper_ls_backend.lm.anthropic_api import (
    ANTHROPIC_BASE_URL,
    DEFAULT_ANTHROPIC_MODEL,
    AnthropicTransport,
    build_anthropic_client,
)
from hyper_ls_backend.lm.cache import LRUTagCache, TagCache
from hyper_ls_backend.lm.judge import Judge, JudgeCall, JudgeResult
from hyper_ls_backend.lm.openai_api import OpenAICompatibleTransport
from hyper_ls_backend.lm.panel import JudgePanel, PanelResult
from hyper_ls_backend.lm.pricing import DEFAULT_PRICES, Price, PriceTable
from hyper_ls_backend.lm.retry import RetryPolicy
from hyper_ls_backend.lm.tagger import Tagger, TagResult
from hyper_ls_backend.lm.tags import FREE_TEXT_TAGS, TAG_NAMES
from hyper_ls_backend.lm.transport import (
    Completion,
    LMError,
    StructuredRequest,
    Token,
    Transport,
)

__all__ = [
    "ANTHROPIC_BASE_URL",
    "DEFAULT_ANTHROPIC_MODEL",
    "DEFAULT_PRICES",
    "FREE_TEXT_TAGS",
    "TAG_NAMES",
    "AnthropicTransport",
    "Completion",
    "Judge",
    "JudgeCall",
    "JudgePanel",
    "JudgeResult",
    "LMError",
    "LRUTagCache",
    "OpenAICompatibleTransport",
    "PanelResult",
    "Price",
    "PriceTable",
    "RetryPolicy",
    "StructuredRequest",
    "TagCache",
    "TagResult",
    "Tagger",
    "Token",
    "Transport",
    "build_anthropic_client",
]
