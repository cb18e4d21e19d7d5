"""What judging a campaign will cost and how long it will take, before it starts.

``estimate`` builds the requests the backend would send for every comparison of a file
(``lm/prompts.py``: both answer orders for every judge, and one tagger call per distinct
prompt when the tagger is on), counts their tokens by a fixed rule, prices them from the
price table, and turns the request count into wall time at a stated concurrency and
latency, with and without Anthropic's Message Batches.

The token rule (no tokenizer is downloaded): ``ceil(characters / CHARS_PER_TOKEN)`` for
the text a request carries (instructions, the conversation, both responses, the answer's
JSON schema as sent), plus ``TOOL_USE_TOKENS`` for an Anthropic request (the system
prompt Anthropic adds for forced tool use) and ``MESSAGE_TOKENS`` for each message of an
OpenAI-compatible one (chat template markers). Output tokens are not knowable before the
model answers: ``JUDGE_OUTPUT_TOKENS`` and ``TAGGER_OUTPUT_TOKENS`` are typical answers
(a one- or two-sentence rationale and the verdict; eight short tag values), overridable.
The rule is Anthropic's rule of thumb for English, not checked against a tokenizer here;
code, numbers and non-Latin scripts take more tokens per character than it says.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from pydantic import BaseModel

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.lm.anthropic_api import DEFAULT_ANTHROPIC_MODEL, AnthropicTransport
from hyper_ls_backend.lm.pricing import BATCH_DISCOUNT, PriceTable
from hyper_ls_backend.lm.prompts import judge_request, tagger_request
from hyper_ls_backend.lm.transport import StructuredRequest
from hyper_ls_backend.settings import BatchMode, JudgeProvider, Settings

CHARS_PER_TOKEN = 3.5
"""Anthropic's rule of thumb for English text with Claude (OpenAI's is 4: this errs high)."""
TOOL_USE_TOKENS = 313
"""The tool-use system prompt Anthropic adds to a request whose ``tool_choice`` names the
tool (Claude 4 models; 346 with ``auto``)."""
MESSAGE_TOKENS = 4
JUDGE_OUTPUT_TOKENS = 80
TAGGER_OUTPUT_TOKENS = 60
MIN_CACHEABLE_TOKENS = 1024
"""The shortest prefix Anthropic caches (Sonnet 4.x, Opus 4 and 4.1; 4,096 for Opus 4.5
and Haiku 4.5): a shorter ``cache_control`` prefix is not cached."""
BATCH_TURNAROUND_S = 3600.0
"""Anthropic: most batches end within an hour (all within 24 h)."""
BATCH_MAX_S = 24 * 3600.0


_ANTHROPIC = AnthropicTransport(api_key="estimate-only", model=DEFAULT_ANTHROPIC_MODEL)
"""Builds Anthropic request bodies to count (never sends one)."""


@dataclass(frozen=True)
class JudgeModel:
    model: str
    provider: JudgeProvider

    @classmethod
    def parse(cls, text: str) -> JudgeModel:
        """``[anthropic:|openai:]MODEL``; without a provider, ``claude-*`` models are
        Anthropic's and the rest OpenAI-compatible."""
        provider, _, model = text.rpartition(":")
        if provider not in ("", "anthropic", "openai") or not model:
            raise ValueError(f"a judge is [anthropic:|openai:]MODEL, not {text!r}")
        if not provider:
            provider = "anthropic" if model.startswith("claude") else "openai"
        return cls(model, JudgeProvider(provider))


def configured_judges(settings: Settings) -> list[JudgeModel]:
    """The panel the settings configure (``HYPER_JUDGES``, else the one judge of
    ``HYPER_JUDGE_*``; the default Anthropic judge when none is)."""
    if settings.hyper_judges is not None:
        return [JudgeModel(s.model, JudgeProvider(s.provider)) for s in settings.hyper_judges]
    if settings.judge_provider is JudgeProvider.OPENAI_COMPATIBLE and settings.hyper_judge_model:
        return [JudgeModel(settings.hyper_judge_model, JudgeProvider.OPENAI_COMPATIBLE)]
    model = settings.hyper_judge_model or DEFAULT_ANTHROPIC_MODEL
    return [JudgeModel(model, JudgeProvider.ANTHROPIC)]


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def input_tokens(request: StructuredRequest, judge: JudgeModel) -> int:
    """The request's input tokens by the module's rule, as its API would be sent it."""
    if judge.provider is JudgeProvider.ANTHROPIC:
        params = _ANTHROPIC.params(request)
        text = params["system"] + params["messages"][0]["content"] + json.dumps(params["tools"])
        return tokens(text) + TOOL_USE_TOKENS
    schema = json.dumps(request.schema, ensure_ascii=False)
    text = request.system + request.schema_description + schema + request.user
    return tokens(text) + 2 * MESSAGE_TOKENS


class CallsEstimate(BaseModel):
    """One judge's calls (or the tagger's) over the campaign."""

    model: str
    provider: JudgeProvider
    requests: int
    input_tokens: int
    output_tokens: int
    priced: bool
    """False: the model is not in the price table, so its calls are counted at $0."""
    cost_usd: float
    """One call at a time, at the listed price."""
    batch_cost_usd: float
    """Through Message Batches where the API has them (Anthropic judges), else as above."""


class Estimate(BaseModel):
    comparisons: int
    judges: list[CallsEstimate]
    tagger: CallsEstimate | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cost_per_1000_comparisons_usd: float | None
    batch_cost_usd: float
    batch_cost_per_1000_comparisons_usd: float | None
    batched: bool
    """Whether ``HYPER_JUDGE_BATCH`` would batch an import of the whole file."""
    concurrency: int
    latency_s: float
    wall_time_s: float
    """Every request one at a time through ``concurrency`` slots, each taking ``latency_s``."""
    batch_wall_time_s: float
    """The tagger's calls as above, then the batch's turnaround (``batch_turnaround_s``)."""
    batch_turnaround_s: float
    batch_max_wall_time_s: float
    """If the batch takes the 24 hours the API allows."""
    fixed_prefix_tokens: int
    """The part of every judge request that never changes (tool and instructions)."""
    prompt_caching: str
    token_rule: str


def estimate(
    comparisons: Iterable[Comparison],
    judges: Sequence[JudgeModel],
    settings: Settings,
    *,
    prices: PriceTable,
    latency_s: float,
    concurrency: int,
    judge_output_tokens: int = JUDGE_OUTPUT_TOKENS,
    tagger_output_tokens: int = TAGGER_OUTPUT_TOKENS,
    batch_turnaround_s: float = BATCH_TURNAROUND_S,
) -> Estimate:
    """The campaign's estimate; reads ``comparisons`` once."""
    n = 0
    judge_tokens = [0] * len(judges)
    prompts: set[str] = set()
    tagger_tokens = 0
    primary = judges[0]
    for comparison in comparisons:
        n += 1
        for index, judge in enumerate(judges):
            for swapped in (False, True):
                request = judge_request(
                    comparison, swapped=swapped, max_chars=settings.hyper_max_text_chars
                )
                judge_tokens[index] += input_tokens(request, judge)
        if settings.hyper_tagger and comparison.prompt.strip() and comparison.prompt not in prompts:
            prompts.add(comparison.prompt)
            request = tagger_request(comparison.prompt, max_chars=settings.hyper_max_text_chars)
            tagger_tokens += input_tokens(request, primary)
    per_judge = [
        _calls(judge, 2 * n, tokens_in, 2 * n * judge_output_tokens, prices, batchable=True)
        for judge, tokens_in in zip(judges, judge_tokens, strict=True)
    ]
    tagger = (
        _calls(
            primary,
            len(prompts),
            tagger_tokens,
            len(prompts) * tagger_output_tokens,
            prices,
            batchable=False,
        )
        if settings.hyper_tagger
        else None
    )
    every = [*per_judge, *([tagger] if tagger else [])]
    requests = sum(c.requests for c in every)
    cost = sum(c.cost_usd for c in every)
    batch_cost = sum(c.batch_cost_usd for c in every)
    tagger_time = (tagger.requests if tagger else 0) * latency_s / concurrency
    prefix = _fixed_prefix_tokens(primary)
    return Estimate(
        comparisons=n,
        judges=per_judge,
        tagger=tagger,
        requests=requests,
        input_tokens=sum(c.input_tokens for c in every),
        output_tokens=sum(c.output_tokens for c in every),
        cost_usd=cost,
        cost_per_1000_comparisons_usd=1000 * cost / n if n else None,
        batch_cost_usd=batch_cost,
        batch_cost_per_1000_comparisons_usd=1000 * batch_cost / n if n else None,
        batched=settings.hyper_judge_batch is BatchMode.ON
        or (settings.hyper_judge_batch is BatchMode.AUTO and n >= settings.hyper_judge_batch_min),
        concurrency=concurrency,
        latency_s=latency_s,
        wall_time_s=requests * latency_s / concurrency,
        batch_wall_time_s=tagger_time + batch_turnaround_s,
        batch_turnaround_s=batch_turnaround_s,
        batch_max_wall_time_s=tagger_time + BATCH_MAX_S,
        fixed_prefix_tokens=prefix,
        prompt_caching=(
            f"not used: the fixed part of a judge request is about {prefix} tokens, under "
            f"the {MIN_CACHEABLE_TOKENS:,} tokens Anthropic caches at the least"
            if prefix < MIN_CACHEABLE_TOKENS
            else f"the fixed part of a judge request is about {prefix} tokens: long enough "
            "to cache, which the backend does not do yet"
        ),
        token_rule=(
            f"ceil(characters / {CHARS_PER_TOKEN}) of the text sent, + {TOOL_USE_TOKENS} per "
            f"Anthropic request (tool use), + {MESSAGE_TOKENS} per OpenAI-compatible message; "
            f"output {judge_output_tokens} per judge call, {tagger_output_tokens} per tagger "
            "call (assumed)"
        ),
    )


def _calls(
    judge: JudgeModel,
    requests: int,
    tokens_in: int,
    tokens_out: int,
    prices: PriceTable,
    *,
    batchable: bool,
) -> CallsEstimate:
    cost = prices.cost(judge.model, tokens_in, tokens_out)
    batched = batchable and judge.provider is JudgeProvider.ANTHROPIC
    return CallsEstimate(
        model=judge.model,
        provider=judge.provider,
        requests=requests,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        priced=prices.price(judge.model) is not None,
        cost_usd=cost,
        batch_cost_usd=cost * BATCH_DISCOUNT if batched else cost,
    )


def _fixed_prefix_tokens(judge: JudgeModel) -> int:
    """What every judge request starts with, before the comparison: tool and instructions."""
    empty = Comparison(id="-", prompt="", response_a="-", response_b="-")
    request = judge_request(empty, swapped=False)
    return input_tokens(replace(request, user=""), judge)
