"""The LM judge: asks for a verdict in both answer orders and combines the two.

Running both orders (A-B, and B-A with the answer un-swapped) exposes position bias: a
judge that flips with the order is ``consistent=False``, the strongest single signal that a
comparison needs a human. The two orders are asked at the same time, on two threads. The
verdict keeps both answers (``orders``), and its confidence combines their agreement with
the stated strength:

- both orders agree: 0.5 + 0.5 x mean strength (clearly = 1, slightly or tie = 0.5), so
  0.75 to 1;
- they disagree: the label is a tie, as in the pairs format (so a file of this judge's
  verdicts routes offline as the server routes them), and confidence = 0.5 x |mean score|
  (A clearly = +1, A slightly = +0.5, tie = 0, ...), so 0 to 0.375: how far the two orders
  still lean one way. The lean itself stays in ``orders`` (``signals.lean`` reads it);
- only one order answered: that answer, ``consistent=None``, confidence 0.375 to 0.5.

When both orders came with token probabilities (``logprobs.py``), the confidence is instead
the probability of the verdict's label: the mean over the two orders of the mass each put
on that label where it chose its answer's label. An order that chose another label counts
against it with whatever little mass it left on it, so a position-biased judge gets a low
confidence however sure each order was.

``judge()`` never raises for LM or network failures: when neither order gives a readable
answer the verdict's label is None and ``error`` says why.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from functools import partial

from pydantic import BaseModel, ConfigDict, computed_field

from hyper_ls_backend.core.comparison import (
    FIVE_POINT_SCALE,
    Comparison,
    JudgeVerdict,
    Label,
    OrderAnswers,
)
from hyper_ls_backend.lm.batch import (
    AdaptiveLimiter,
    LimitedTransport,
    map_bounded,
    run_together,
)
from hyper_ls_backend.lm.logprobs import label_probabilities
from hyper_ls_backend.lm.parsing import UnparseableAnswer, parse_verdict
from hyper_ls_backend.lm.pricing import PriceTable
from hyper_ls_backend.lm.prompts import DEFAULT_MAX_TEXT_CHARS, judge_request
from hyper_ls_backend.lm.retry import CallOutcome, RetryPolicy, call_with_retries
from hyper_ls_backend.lm.transport import StructuredRequest, Transport

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

_UNSWAP_LABEL = {Label.A: Label.B, Label.B: Label.A, Label.TIE: Label.TIE}


class JudgeCall(BaseModel):
    """One call to the judge, in one answer order."""

    model_config = ConfigDict(frozen=True)

    swapped: bool
    """True when response B was shown first (as "A")."""
    preference: str | None = None
    """The 5-point answer in the comparison's orientation (already un-swapped); None if the
    call failed."""
    rationale: str | None = None
    label_probabilities: dict[Label, float] | None = None
    """The mass the model put on each label where it chose its answer's label, from its
    token probabilities, in the comparison's orientation; None when the API gave none."""
    answer_probability: float | None = None
    """The part of ``label_probabilities`` on the label of ``preference``."""
    raw: str | None = None
    """What the model returned, verbatim (in the order it was shown the responses)."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    error: str | None = None
    batch: bool = False
    """Answered through a batch API (Anthropic's Message Batches), at its price."""


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
    """The verdict from the calls' un-swapped answers (see the module docstring), with each
    order's answer in ``orders``."""
    label, consistent, confidence = _from_answers(
        [call.preference for call in calls if call.preference is not None]
    )
    masses = [call.label_probabilities for call in calls]
    if label is not None and len(masses) == 2 and None not in masses:
        confidence = min(1.0, sum(mass.get(label, 0.0) for mass in masses if mass) / 2)
    orders = OrderAnswers(
        ab=next((call.preference for call in calls if not call.swapped), None),
        ba=next((call.preference for call in calls if call.swapped), None),
    )
    return JudgeVerdict(
        label=label, consistent=consistent, model=model, confidence=confidence, orders=orders
    )


def _from_answers(answers: list[str]) -> tuple[Label | None, bool | None, float | None]:
    """Label, consistency and confidence from the stated answers alone."""
    if not answers:
        return None, None, None
    scores = [SCORE[answer] for answer in answers]
    strengths = [1.0 if abs(score) == 1.0 else 0.5 for score in scores]
    if len(answers) == 1:
        return FIVE_POINT_SCALE[answers[0]], None, 0.5 * (0.5 + 0.5 * strengths[0])
    labels = {FIVE_POINT_SCALE[answer] for answer in answers}
    if len(labels) == 1:
        return labels.pop(), True, 0.5 + 0.5 * sum(strengths) / len(strengths)
    mean_score = sum(scores) / len(scores)
    return Label.TIE, False, 0.5 * abs(mean_score)


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
        """Both orders at once: two requests in flight."""
        return self._judge(comparison, self._transport)

    def judge_many(
        self, comparisons: Iterable[Comparison], max_concurrency: int = 4
    ) -> list[JudgeResult]:
        """Results in input order, with at most ``max_concurrency`` requests in flight (not
        comparisons: each comparison's two orders are two requests, and while one order
        waits for a slot its comparison's other order may already be running)."""
        bounded = LimitedTransport(self._transport, AdaptiveLimiter(max_concurrency))
        return map_bounded(lambda c: self._judge(c, bounded), comparisons, max_concurrency)

    def _judge(self, comparison: Comparison, transport: Transport) -> JudgeResult:
        start = time.monotonic()
        calls = run_together(
            [partial(self._call, comparison, swapped, transport) for swapped in (False, True)]
        )
        return self.result(comparison, calls, time.monotonic() - start)

    def result(
        self, comparison: Comparison, calls: Sequence[JudgeCall], latency_s: float
    ) -> JudgeResult:
        """The result of both orders' calls (made here, or answered in a batch)."""
        errors = [
            f"{'B-A' if call.swapped else 'A-B'} order: {call.error}"
            for call in calls
            if call.error
        ]
        return JudgeResult(
            comparison_id=comparison.id,
            verdict=combine(calls, self.model),
            calls=tuple(calls),
            latency_s=latency_s,
            error="; ".join(errors) or None,
        )

    def request(self, comparison: Comparison, swapped: bool) -> StructuredRequest:
        """What this judge sends for one order of ``comparison``."""
        return judge_request(
            comparison,
            swapped=swapped,
            max_chars=self._max_text_chars,
            max_tokens=self._max_output_tokens,
        )

    def ask(self, comparison: Comparison, swapped: bool) -> JudgeCall:
        """One order, asked now with retries (as ``judge`` asks each)."""
        return self._call(comparison, swapped, self._transport)

    def _call(self, comparison: Comparison, swapped: bool, transport: Transport) -> JudgeCall:
        outcome = call_with_retries(transport, self.request(comparison, swapped), self._retry)
        return self.answer(swapped, outcome)

    def answer(self, swapped: bool, outcome: CallOutcome, *, batch: bool = False) -> JudgeCall:
        """The call's answer read from its outcome; ``batch``: answered through a batch API
        (costed at its discount)."""
        answered = JudgeCall(swapped=swapped, **outcome.record(self._prices, self.model))
        if batch:
            completion = outcome.completion
            cost = (
                self._prices.cost(
                    self.model, completion.input_tokens, completion.output_tokens, batch=True
                )
                if completion is not None
                else 0.0
            )
            answered = answered.model_copy(update={"batch": True, "cost_usd": cost})
        completion = outcome.completion
        if completion is None:
            return answered
        try:
            parsed = parse_verdict(completion)
        except UnparseableAnswer as error:
            return answered.model_copy(update={"error": str(error)})
        preference = UNSWAP[parsed.preference] if swapped else parsed.preference
        mass = label_probabilities(completion.tokens, parsed.preference)
        if mass is not None and swapped:
            mass = {_UNSWAP_LABEL[label]: p for label, p in mass.items()}
        return answered.model_copy(
            update={
                "preference": preference,
                "rationale": parsed.rationale,
                "label_probabilities": mass,
                "answer_probability": mass[FIVE_POINT_SCALE[preference]] if mass else None,
            }
        )
