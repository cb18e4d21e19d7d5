"""Talking to LMs: the judge and the tagger, their prompts, parsing, retries and cost.

Depends on core types, ``anthropic`` and ``requests`` only. Every client takes its
settings as constructor arguments; nothing here reads the environment.
"""

from hyper_ls_backend.lm.anthropic_api import (
    DEFAULT_ANTHROPIC_MODEL,
    AnthropicTransport,
    build_anthropic_client,
)
from hyper_ls_backend.lm.cache import LRUTagCache, TagCache
from hyper_ls_backend.lm.judge import (
    AnthropicJudge,
    Judge,
    JudgeCall,
    JudgeResult,
    OpenAICompatibleJudge,
)
from hyper_ls_backend.lm.openai_api import OpenAICompatibleTransport
from hyper_ls_backend.lm.pricing import DEFAULT_PRICES, Price, PriceTable
from hyper_ls_backend.lm.retry import RetryPolicy
from hyper_ls_backend.lm.tagger import AnthropicTagger, OpenAICompatibleTagger, Tagger, TagResult
from hyper_ls_backend.lm.tags import TAG_CHOICES, TAG_NAMES
from hyper_ls_backend.lm.transport import Completion, LMError, StructuredRequest, Transport

__all__ = [
    "DEFAULT_ANTHROPIC_MODEL",
    "DEFAULT_PRICES",
    "TAG_CHOICES",
    "TAG_NAMES",
    "AnthropicJudge",
    "AnthropicTagger",
    "AnthropicTransport",
    "Completion",
    "Judge",
    "JudgeCall",
    "JudgeResult",
    "LMError",
    "LRUTagCache",
    "OpenAICompatibleJudge",
    "OpenAICompatibleTagger",
    "OpenAICompatibleTransport",
    "Price",
    "PriceTable",
    "RetryPolicy",
    "StructuredRequest",
    "TagCache",
    "TagResult",
    "Tagger",
    "Transport",
    "build_anthropic_client",
]
