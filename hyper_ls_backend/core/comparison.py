"""The objects every flow passes around: a comparison, its labels and its judge verdict.

Validation happens here, once, at the edge of the core: everything downstream works with
trusted objects. The wire format is the HyPER pairs format (``shared/data/README.md``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

MAX_TEXT_CHARS = 1_000_000
"""Longest prompt or response accepted. Longer texts are almost always an export bug."""


class Label(StrEnum):
    """Coarse preference: which response is better, or a tie."""

    A = "A"
    B = "B"
    TIE = "tie"


FIVE_POINT_SCALE: dict[str, Label] = {
    "A-is-clearly-better": Label.A,
    "A-is-slightly-better": Label.A,
    "Tie": Label.TIE,
    "B-is-slightly-better": Label.B,
    "B-is-clearly-better": Label.B,
}
"""MultiPref's overall-preference scale, mapped to the coarse label."""


_BY_LOWER_NAME = {label.value.lower(): label for label in Label}


def parse_label(value: Any) -> Label:
    """Read a coarse label or a 5-point MultiPref answer; anything else is an error."""
    if isinstance(value, Label):
        return value
    if isinstance(value, str):
        if value in FIVE_POINT_SCALE:
            return FIVE_POINT_SCALE[value]
        label = _BY_LOWER_NAME.get(value.strip().lower())
        if label is not None:
            return label
    allowed = ", ".join([*(label.value for label in Label), *FIVE_POINT_SCALE])
    raise ValueError(f"unknown label {value!r} (expected one of: {allowed})")


CoarseLabel = Annotated[Label, BeforeValidator(parse_label)]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"is {len(value):,} characters long (limit {MAX_TEXT_CHARS:,})")
    return value


Text = Annotated[str, BeforeValidator(_text)]
"""A response: may be empty (a model that answered nothing lost), never absent or huge."""


class Turn(BaseModel):
    """One earlier message of a multi-turn conversation."""

    model_config = ConfigDict(frozen=True)

    role: str
    content: Text


ANSWER_STRENGTH: dict[str, float] = {
    "A-is-clearly-better": 1.0,
    "A-is-slightly-better": 0.5,
    "Tie": 0.0,
    "B-is-slightly-better": 0.5,
    "B-is-clearly-better": 1.0,
}
"""How strongly a 5-point answer states its preference (a coarse answer states none)."""


def _order_answer(value: Any) -> str | None:
    """An answer in one order: a 5-point name kept as is (it carries a strength), or a
    coarse label; None for an order not run or unreadable."""
    if value is None:
        return None
    if isinstance(value, str) and value in FIVE_POINT_SCALE:
        return value
    return parse_label(value).value


OrderAnswer = Annotated[str | None, BeforeValidator(_order_answer)]


class OrderAnswers(BaseModel):
    """A judge's answer with the responses shown in the row's order (``ab``) and swapped
    (``ba``, already read back in the row's orientation)."""

    model_config = ConfigDict(frozen=True)

    ab: OrderAnswer = None
    ba: OrderAnswer = None

    def answers(self) -> list[str]:
        return [answer for answer in (self.ab, self.ba) if answer is not None]

    def labels(self) -> list[Label]:
        return [parse_label(answer) for answer in self.answers()]


class JudgeVerdict(BaseModel):
    """What an LM judge said about a comparison.

    ``label`` is None when the judge failed (no parseable answer after retries).
    ``consistent`` is whether it gave the same answer with the responses swapped, None when
    it was run in one order only (read from ``orders`` when not given). ``orders`` holds
    the answer in each order; ``confidence`` a probability-like confidence in ``label``
    (token probabilities, repeated sampling, a stated strength), when the judge gave one.
    """

    model_config = ConfigDict(frozen=True)

    label: CoarseLabel | None = None
    consistent: bool | None = None
    model: str | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    orders: OrderAnswers | None = None

    @model_validator(mode="after")
    def _consistency_from_orders(self) -> JudgeVerdict:
        if self.consistent is None and self.orders is not None:
            labels = self.orders.labels()
            if len(labels) == 2:
                object.__setattr__(self, "consistent", labels[0] == labels[1])
        return self

    @property
    def failed(self) -> bool:
        return self.label is None


DRAW_TOLERANCE = 1e-9


def votes(verdict: JudgeVerdict) -> dict[Label, float]:
    """One judge's vote, split over its order answers (its label when it has none)."""
    answers = verdict.orders.labels() if verdict.orders else []
    if not answers:
        return {verdict.label: 1.0} if verdict.label is not None else {}
    share: dict[Label, float] = defaultdict(float)
    for label in answers:
        share[label] += 1.0 / len(answers)
    return dict(share)


def panel_label(verdicts: Sequence[JudgeVerdict]) -> Label | None:
    """The panel's label: every judge has one vote, split between its two order answers
    (a judge that flips with the order gives half a vote to each side), and the label with
    the most votes wins; a draw goes to the primary's (first) label when it is among the
    best, else to a tie. None when no judge answered."""
    total: dict[Label, float] = defaultdict(float)
    for verdict in verdicts:
        for label, weight in votes(verdict).items():
            total[label] += weight
    if not total:
        return None
    best = max(total.values())
    leaders = [label for label, weight in total.items() if weight >= best - DRAW_TOLERANCE]
    if len(leaders) == 1:
        return leaders[0]
    primary = verdicts[0].label if verdicts else None
    return primary if primary in leaders else Label.TIE


class Comparison(BaseModel):
    """A prompt, two candidate responses, and whatever is known about which is better."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1)
    prompt: Text
    """Empty for a pair without a prompt (two texts compared on their own)."""
    response_a: Text
    response_b: Text
    context_a: list[Turn] = Field(default_factory=list)
    context_b: list[Turn] = Field(default_factory=list)
    human: list[CoarseLabel] = Field(default_factory=list)
    gold: CoarseLabel | None = None
    judge: JudgeVerdict | None = None
    judges: list[JudgeVerdict] = Field(default_factory=list)
    """A panel: several judges' verdicts on this comparison, the primary (``judge``) first."""
    tags: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_string(cls, value: Any) -> Any:
        # Integer ids (Label Studio task ids) are common and harmless.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_as_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v).strip().lower() for k, v in value.items() if v is not None}
        return value

    @model_validator(mode="after")
    def _something_to_compare(self) -> Comparison:
        if not self.response_a.strip() and not self.response_b.strip():
            raise ValueError("response_a and response_b are both empty: nothing to compare")
        return self

    @model_validator(mode="after")
    def _primary_leads_the_panel(self) -> Comparison:
        if self.judges and self.judge is None:
            object.__setattr__(self, "judge", self.judges[0])
        elif self.judges and self.judges[0] != self.judge:
            raise ValueError("judges: the panel must start with the primary verdict, judge")
        return self

    @property
    def group(self) -> str:
        """Comparisons sharing a prompt share a group; splits must keep a group together."""
        return str(self.meta.get("group", self.id))

    @property
    def first_human(self) -> Label | None:
        """The label a one-annotator campaign would get."""
        return self.human[0] if self.human else None

    @property
    def reference_label(self) -> Label | None:
        """``gold`` if given, else the majority of human votes (ties broken toward ``tie``)."""
        if self.gold is not None:
            return self.gold
        if not self.human:
            return None
        counts = Counter(self.human).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            return Label.TIE
        return counts[0][0]

    @property
    def judge_label(self) -> Label | None:
        """The judges' label, the one a campaign pre-fills: the panel's (``panel_label``)
        when other judges answered too, else the primary's."""
        if self.judge is None:
            return None
        if any(not verdict.failed for verdict in self.panel):
            return panel_label(self.judges)
        return self.judge.label

    @property
    def judge_failed(self) -> bool:
        """True when a judge was asked and none gave a usable answer."""
        return self.judge is not None and self.judge_label is None

    @property
    def all_tags(self) -> dict[str, str]:
        """Descriptive tags, with ``meta.category`` read as the ``category`` tag."""
        tags = dict(self.tags)
        category = self.meta.get("category")
        if isinstance(category, str) and category.strip() and "category" not in tags:
            tags["category"] = category.strip().lower()
        return tags

    def without_labels(self) -> Comparison:
        """The comparison as a router must see it: no human votes, no gold."""
        return self.model_copy(update={"human": [], "gold": None})

    @property
    def panel(self) -> list[JudgeVerdict]:
        """The other judges' verdicts (the panel without the primary)."""
        return self.judges[1:]

    def with_judge(self, verdict: JudgeVerdict | None) -> Comparison:
        """This comparison judged by ``verdict`` alone (any panel is dropped)."""
        return self.model_copy(update={"judge": verdict, "judges": []})

    def with_panel(self, verdicts: Sequence[JudgeVerdict]) -> Comparison:
        """This comparison judged by a panel, the first verdict the primary's."""
        verdicts = list(verdicts)
        return self.model_copy(
            update={"judge": verdicts[0] if verdicts else None, "judges": verdicts}
        )

    def with_tags(self, tags: dict[str, str]) -> Comparison:
        return self.model_copy(update={"tags": {**self.tags, **tags}})
