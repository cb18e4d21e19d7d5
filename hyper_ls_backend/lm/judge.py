"""The LM judge: asks for a verdict in both answer orders and combines the two.

Running both orders (A-B, then B-A with the answer un-swapped) exposes position bias: a
judge that flips with the order is ``consistent=False``, the strongest single signal that a
comparison needs a human. Confidence combines that agreement with the stated strength:

- both orders agree: 0.5 + 0.5 x mean strength (clearly = 1, slightly or tie = 0.5), so
  0.75 to 1;
- they disagree: the label is the sign of the mean score (A clearly = +1, A slightly = +0.5,
  tie = 0, ...), and confidence = 0.5 x |mean score|, so 0 to 0.375 (opposite answers of
  equal strength give a tie at confidence 0);
- only one order answered: that answer, ``consistent=None``, confidence 0.375 to 0.5.

``judge()`` never raises for LM or network failures: when neither order gives a readable
answer the verdict's label is None and ``error`` says why.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, computed_field

from hyper_ls_backend.core.comparison import FIVE_POINT_SCALE, Comparison, JudgeVerdict, Label
from hyper_ls_backend.lm.batch import map_bounded
from hyper_ls_backend.lm.parsing import UnparseableAnswer, parse_verdict
from hyper_ls_backend.lm.pricing import PriceTable
from hyper_ls_backend.lm.prompts import DEFAULT_MAX_TEXT_CHARS, judge_request
from hyper_ls_backend.lm.retry import RetryPolicy, call_with_retries
from hyper_ls_backend.lm.transport import Transport

SCORE: dict[str, float] = {
    "A-is-clearly-better": 1.0,
    "A-is-slightly-better": 0.5,
    "Tie": 0.0,
    "B-is-slightly-better": -0.5,
    "B-is-clearly-better": -1.0,
}
"""A 5-point answer as a signed score: positive favours A."""

UNSWAP: dict[str, str] = {
    "A-is-clearly-better": "B-is-clearly-better",
    "A-is-slightly-better": "B-is-slightly-better",
    "Tie": "Tie",
    "B-is-slightly-better": "A-is-slightly-better",
    "B-is-clearly-better": "A-is-clearly-better",
}
"""An answer given with the responses swapped, read in the comparison's own orientation."""


class JudgeCall(BaseModel):
    """One call to the judge, in one answer order."""

    model_config = ConfigDict(frozen=True)

    swapped: bool
    """True when response B was shown first (as "A")."""
    preference: str | None = None
    """The 5-point answer in the comparison's orientation (already un-swapped); None if the
    call failed."""
    rationale: str | None = None
    raw: str | None = None
    """What the model returned, verbatim (in the order it was shown the responses)."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    error: str | None = None


class JudgeResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    comparison_id: str
    verdict: JudgeVerdict
    calls: tuple[JudgeCall, ...]
    latency_s: float
    error: str | None = None
    """Set when a call failed, even if the other order still gave a verdict."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def input_tokens(self) -> int:
        return sum(call.input_tokens for call in self.calls)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def output_tokens(self) -> int:
        return sum(call.output_tokens for call in self.calls)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> float:
        return sum(call.cost_usd for call in self.calls)

    @property
    def failed(self) -> bool:
        return self.verdict.failed


def combine(calls: Sequence[JudgeCall], model: str) -> JudgeVerdict:
    """The verdict from the calls' un-swapped answers (see the module docstring)."""
    answers = [call.preference for call in calls if call.preference is not None]
    if not answers:
        return JudgeVerdict(label=None, consistent=None, model=model, confidence=None)
    scores = [SCORE[answer] for answer in answers]
    strengths = [1.0 if abs(score) == 1.0 else 0.5 for score in scores]
    if len(answers) == 1:
        return JudgeVerdict(
            label=FIVE_POINT_SCALE[answers[0]],
            consistent=None,
            model=model,
            confidence=0.5 * (0.5 + 0.5 * strengths[0]),
        )
    labels = {FIVE_POINT_SCALE[answer] for answer in answers}
    mean_score = sum(scores) / len(scores)
    if len(labels) == 1:
        confidence = 0.5 + 0.5 * sum(strengths) / len(strengths)
        return JudgeVerdict(label=labels.pop(), consistent=True, model=model, confidence=confidence)
    label = Label.A if mean_score > 0 else Label.B if mean_score < 0 else Label.TIE
    return JudgeVerdict(
        label=label, consistent=False, model=model, confidence=0.5 * abs(mean_score)
    )


class Judge:
    """An LM judge over any ``Transport``. Thread-safe: one instance serves a whole batch.

    The transport (``AnthropicTransport``, ``OpenAICompatibleTransport``) carries the API's
    settings and is built once by the caller; one transport can serve a judge and a tagger.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        prices: PriceTable | None = None,
        retry: RetryPolicy | None = None,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        max_output_tokens: int = 1024,
    ) -> None:
        self._transport = transport
        self._prices = prices or PriceTable()
        self._retry = retry or RetryPolicy()
        self._max_text_chars = max_text_chars
        self._max_output_tokens = max_output_tokens

    @property
    def model(self) -> str:
        return self._transport.model

    def judge(self, comparison: Comparison) -> JudgeResult:
        start = time.monotonic()
        calls = tuple(self._call(comparison, swapped) for swapped in (False, True))
        errors = [
            f"{'B-A' if call.swapped else 'A-B'} order: {call.error}"
            for call in calls
            if call.error
        ]
        return JudgeResult(
            comparison_id=comparison.id,
            verdict=combine(calls, self.model),
            calls=calls,
            latency_s=time.monotonic() - start,
            error="; ".join(errors) or None,
        )

    def judge_many(
        self, comparisons: Iterable[Comparison], max_concurrency: int = 4
    ) -> list[JudgeResult]:
        """Results in input order. Each comparison's two calls run one after the other, so at
        most ``max_concurrency`` requests are in flight."""
        return map_bounded(self.judge, comparisons, max_concurrency)

    def _call(self, comparison: Comparison, swapped: bool) -> JudgeCall:
        request = judge_request(
            comparison,
            swapped=swapped,
            max_chars=self._max_text_chars,
            max_tokens=self._max_output_tokens,
        )
        outcome = call_with_retries(self._transport, request, self._retry)
        answered = JudgeCall(swapped=swapped, **outcome.record(self._prices, self.model))
        if outcome.completion is None:
            return answered
        try:
            parsed = parse_verdict(outcome.completion)
        except UnparseableAnswer as error:
            return answered.model_copy(update={"error": str(error)})
        preference = UNSWAP[parsed.preference] if swapped else parsed.preference
        return answered.model_copy(update={"preference": preference, "rationale": parsed.rationale})
