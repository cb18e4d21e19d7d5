"""A panel of LM judges: every judge asked about the same comparison at the same time.

Each judge runs both answer orders at once too, so a panel of n judges has 2n requests in
flight per comparison and takes about as long as its slowest judge. The judges may be any
mix of APIs and models; each verdict names its judge's model, and each judge's calls are
priced with its own model's price. A panel of one judge reports exactly what that judge
does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

from pydantic import BaseModel, ConfigDict, computed_field

from hyper_ls_backend.core.comparison import Comparison, JudgeVerdict
from hyper_ls_backend.lm.batch import run_together
from hyper_ls_backend.lm.judge import Judge, JudgeResult


class PanelResult(BaseModel):
    """Every judge's result on one comparison, the primary's first."""

    model_config = ConfigDict(frozen=True)

    comparison_id: str
    results: tuple[JudgeResult, ...]
    latency_s: float
    """Wall time for the whole panel (the judges run at the same time)."""

    @property
    def verdicts(self) -> list[JudgeVerdict]:
        """For ``Comparison.with_panel``: the primary's verdict first."""
        return [result.verdict for result in self.results]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def input_tokens(self) -> int:
        return sum(result.input_tokens for result in self.results)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def output_tokens(self) -> int:
        return sum(result.output_tokens for result in self.results)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> float:
        return sum(result.cost_usd for result in self.results)

    @property
    def failed(self) -> bool:
        """True only when no judge gave a usable label."""
        return all(result.failed for result in self.results)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def error(self) -> str | None:
        """Each failing judge's error, named by its model (a lone judge's error as is)."""
        if len(self.results) == 1:
            return self.results[0].error
        errors = [
            f"{result.verdict.model}: {result.error}" for result in self.results if result.error
        ]
        return "; ".join(errors) or None


class JudgePanel:
    """Several ``Judge`` objects, the first the primary. Thread-safe, as its judges are."""

    def __init__(self, judges: Sequence[Judge]) -> None:
        if not judges:
            raise ValueError("a judge panel needs at least one judge")
        self.judges: tuple[Judge, ...] = tuple(judges)

    @property
    def primary(self) -> Judge:
        return self.judges[0]

    @property
    def model(self) -> str:
        """The judges' models, the primary's first: ``gpt-4 + claude-sonnet-4-6``."""
        return " + ".join(judge.model for judge in self.judges)

    def judge(self, comparison: Comparison) -> PanelResult:
        start = time.monotonic()
        results = run_together([partial(judge.judge, comparison) for judge in self.judges])
        return PanelResult(
            comparison_id=comparison.id,
            results=tuple(results),
            latency_s=time.monotonic() - start,
        )
