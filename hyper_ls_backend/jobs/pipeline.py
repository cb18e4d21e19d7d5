"""The import flow for one task: read it, judge it, route it, write the decision back.

Each step stores its result before the next begins, and the decision is made exactly once
(the store refuses a second), so re-running ``route_task`` after a crash or a duplicated
webhook only finishes what is missing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from hyper_ls_backend.core.comparison import Comparison, parse_label
from hyper_ls_backend.core.router import Route, Router, StreamingRouter, budget_count
from hyper_ls_backend.core.strategies import stable_uniform
from hyper_ls_backend.lm import Judge, Tagger
from hyper_ls_backend.ls.client import LabelStudioClient, TaskGone, WriteBack
from hyper_ls_backend.ls.label_config import (
    PreferenceConfig,
    parse_label_config,
    task_to_comparison,
)
from hyper_ls_backend.settings import AIMode, Settings
from hyper_ls_backend.store import Ledger, Store
from hyper_ls_backend.store.schema import DecisionRecord

log = logging.getLogger(__name__)

NO_JUDGE_REASON = "no LM judge configured: every task goes to humans"
AUDIT_REASON = "audit: a random sample of what the judge labels, to measure the judge"
AUDIT_SEED = 7
BUDGET_FILL_REASON = "budget fill: the rest of the received tasks are needed to spend the budget"
REASONS_IN_SUMMARY = 2
LOCK_STRIPES = 256


class RouterRegistry:
    """The router each project routes with: its adopted version, else the prior."""

    def __init__(self, store: Store, prior: Router) -> None:
        self._store, self.prior = store, prior
        self._cache: dict[str, Router] = {}
        self._lock = threading.Lock()

    def for_project(self, project_id: int) -> Router:
        version = self._store.active_router(project_id)
        if version is None:
            return self.prior
        with self._lock:
            if version.version not in self._cache:
                self._cache[version.version] = Router.from_dict(version.artifact)
            return self._cache[version.version]


@dataclass
class Pipeline:
    settings: Settings
    store: Store
    routers: RouterRegistry
    judge: Judge | None
    tagger: Tagger | None
    label_studio: LabelStudioClient | None

    _task_locks: list[threading.Lock] = field(
        default_factory=lambda: [threading.Lock() for _ in range(LOCK_STRIPES)],
        init=False,
        repr=False,
    )
    """Two jobs for one task (a duplicated webhook, jobs left in the queue by a crash and
    the same tasks resumed at start, /predict during an import) run one after the other in
    this process, so the judge is paid once and the write-back never creates a second
    prediction or annotation."""

    def route_task(self, project_id: int, task_id: int) -> DecisionRecord:
        """Route one received task (if not yet routed) and make sure LS shows the decision."""
        with self._task_locks[hash((project_id, task_id)) % LOCK_STRIPES]:
            return self._route_task(project_id, task_id)

    def _route_task(self, project_id: int, task_id: int) -> DecisionRecord:
        project = self.store.project(project_id)
        if project is None:
            raise LookupError(f"project {project_id} is unknown: was the backend connected?")
        settings = self.settings.for_project(project.extra_params)
        config = parse_label_config(project.label_config)
        record = self.store.task(project_id, task_id)
        decision = self.store.decision(project_id, task_id)
        made_now = False
        if decision is None:
            comparison, problem = self._read(project_id, task_id, record.payload, config)
            judge_error = None
            if comparison is not None and self.judge is not None:
                comparison, judge_error = self._judge(project_id, task_id, comparison)
            router = self.routers.for_project(project_id)
            decision, made_now = self.store.decide(
                project_id,
                task_id,
                lambda ledger: self._decide(
                    router, ledger, settings, comparison, problem, judge_error
                ),
            )
        if decision.written_at is None and self.label_studio is not None:
            self._write_back(decision, record.payload, config, settings, fresh=made_now)
        return decision

    def _read(
        self, project_id: int, task_id: int, payload: dict[str, Any], config: PreferenceConfig
    ) -> tuple[Comparison | None, str | None]:
        try:
            comparison = task_to_comparison(payload, config)
        except ValueError as error:
            self.store.save_comparison(project_id, task_id, None, str(error))
            return None, f"task could not be read: {error}"
        if self.tagger is not None:
            tagged = self.tagger.tag(comparison.prompt)
            comparison = comparison.with_tags(tagged.tags)
        self.store.save_comparison(project_id, task_id, comparison.model_dump(mode="json"), None)
        return comparison, None

    def _judge(
        self, project_id: int, task_id: int, comparison: Comparison
    ) -> tuple[Comparison, str | None]:
        result = self.judge.judge(comparison)
        self.store.save_judge_output(
            project_id,
            task_id,
            verdict=result.verdict.model_dump(mode="json"),
            calls=[call.model_dump(mode="json") for call in result.calls],
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost_usd=result.cost_usd,
            latency_s=result.latency_s,
            error=result.error,
        )
        error = f"judge failed after retries: {result.error}" if result.failed else None
        return comparison.with_judge(result.verdict), error

    def _decide(
        self,
        router: Router,
        ledger: Ledger,
        settings: Settings,
        comparison: Comparison | None,
        problem: str | None,
        judge_error: str | None,
    ) -> dict[str, Any]:
        if comparison is None or self.judge is None:
            return {
                "route": Route.HUMAN.value,
                "score": 0.0,
                "reasons": [problem or NO_JUDGE_REASON],
                "forced": True,
                "model_version": router.version,
            }
        streaming = StreamingRouter(
            router,
            settings.hyper_budget,
            n_seen=ledger.n_seen,
            n_human=ledger.n_human,
            n_forced=ledger.n_forced,
            window=ledger.recent_scores,
        )
        decision = streaming.decide(comparison)
        route, reasons = decision.route, decision.reasons
        fixed = router.strategy.fixed_human_share
        share = settings.hyper_budget if fixed is None else fixed
        audit = False
        if route is Route.AI and must_fill(ledger, share):
            route, reasons = Route.HUMAN, [BUDGET_FILL_REASON, *reasons]
        elif route is Route.AI and audited(comparison, ledger, share, settings.hyper_audit_share):
            route, reasons, audit = Route.HUMAN, [AUDIT_REASON, *reasons], True
        verdict = comparison.judge
        return {
            "route": route.value,
            "score": decision.score,
            "reasons": [judge_error] if judge_error else reasons,
            "forced": decision.forced,
            "audit": audit,
            "judge_label": verdict.label.value if verdict and verdict.label else None,
            "judge_confidence": verdict.confidence if verdict else None,
            "model_version": router.version,
        }

    def _write_back(
        self,
        decision: DecisionRecord,
        payload: dict[str, Any],
        config: PreferenceConfig,
        settings: Settings,
        fresh: bool,
    ) -> None:
        label = decision.judge_label
        item = WriteBack(
            task=payload,
            route=decision.route,
            score=decision.score,
            reason=summarize(decision),
            model_version=decision.model_version,
            label=parse_label(label) if label else None,
            confidence=decision.judge_confidence,
            annotate=settings.hyper_ai_mode is AIMode.ANNOTATE,
            fresh=fresh,
        )
        try:
            written = self.label_studio.write(config, item)
        except TaskGone:
            # Deleted in Label Studio: the decision stays ours, there is nothing to show.
            log.warning(
                "task %d of project %d was deleted in Label Studio before its decision "
                "was written back",
                decision.task_id,
                decision.project_id,
            )
            self.store.mark_written(decision.project_id, decision.task_id)
            return
        if decision.route == Route.HUMAN.value and settings.hyper_annotators:
            self.label_studio.assign(
                decision.project_id, decision.task_id, settings.hyper_annotators
            )
        self.store.mark_written(
            decision.project_id, decision.task_id, written.prediction_id, written.annotation_id
        )


def must_fill(ledger: Ledger, share: float) -> bool:
    """Whether every task received and not yet decided (this one included) must go to
    humans for the project to end at exactly ``floor(share x received)`` human tasks.

    The streaming router alone never overspends but may underspend when a batch scores
    lower than the router's reference scores; this spends the rest at the end of a batch.
    It keeps ``n_human <= floor(share x n_seen)`` at every step, like the router.
    """
    need = budget_count(share, ledger.n_received) - ledger.n_human
    remaining = ledger.n_received - ledger.n_seen
    return need > 0 and remaining <= need


def audited(comparison: Comparison, ledger: Ledger, share: float, audit_share: float) -> bool:
    """Whether a task the judge would label goes to humans as an audit: a fixed draw per
    task (replays do not change it), only while the budget has room for it."""
    room = budget_count(share, ledger.n_seen + 1) - ledger.n_human
    draw = stable_uniform([f"audit:{comparison.id}"], AUDIT_SEED)[0]
    return room > 0 and draw < audit_share


def summarize(decision: DecisionRecord) -> str:
    """The short ``hyper_reason`` annotators and team leads see in the Data Manager."""
    reasons = "; ".join(decision.reasons[:REASONS_IN_SUMMARY])
    if decision.route == Route.AI.value:
        confidence = (
            f", confidence {decision.judge_confidence:.2f}"
            if decision.judge_confidence is not None
            else ""
        )
        return f"AI: judge says {decision.judge_label}{confidence} ({reasons})"
    return f"human: {reasons}"
