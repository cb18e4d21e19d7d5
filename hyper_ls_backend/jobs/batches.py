"""Judging an import through Anthropic's Message Batches API, at half the price per token.

An import is batched when ``HYPER_JUDGE_BATCH`` says so (``on``; ``auto``: at least
``HYPER_JUDGE_BATCH_MIN`` tasks) and every judge of the panel speaks the Anthropic API.
Its tasks are read (and tagged) as any import's, by the queue's workers; the worker that
finds the whole import read sends both orders of every readable, unjudged task for every
judge in one batch per judge (more when an import outgrows one batch), each request named
``t{task}-j{judge}-{ab|ba}``. A batch is claimed in the database before it is sent
(``judge_batches``, unique per import, judge and part), and stored with its API id and its
requests (``judge_batch_items``) as soon as the API has taken it, so it is sent once: two
workers, a duplicated webhook, a restart, all find the claim. A crash in the instant
between the API taking a batch and the database storing its id is the one case that sends
it again: the claim is released after ``2 x HYPER_JUDGE_TIMEOUT + 30 s`` without an id.

``BatchPoller`` (a thread of every backend process) looks at the batches in flight every
``HYPER_JUDGE_BATCH_POLL`` seconds, as recorded in the database: a restarted backend polls
the batches its predecessor sent. An ended batch's results are stored as they are read,
each answer parsed and priced at the batch price, and its tasks routed: a task whose
requests all succeeded is judged from them; a request that errored, expired or was
canceled (or a batch the API lost) is asked again the ordinary way, with the ordinary
retries, and the task is routed like any other (to humans when its judge still fails).
Several processes may poll the same batch: storing its results twice changes nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.lm import AnthropicTransport, JudgeCall, JudgePanel, LMError, PanelResult
from hyper_ls_backend.lm.batches import BatchGone, BatchItem, BatchResult, MessageBatches, pack
from hyper_ls_backend.lm.build import build_transports
from hyper_ls_backend.lm.pricing import BATCH_DISCOUNT
from hyper_ls_backend.lm.retry import CallOutcome
from hyper_ls_backend.lm.transport import TransientLMError
from hyper_ls_backend.settings import BatchMode, Settings
from hyper_ls_backend.store import Store
from hyper_ls_backend.store.schema import JudgeBatchItem, JudgeBatchRecord, TaskRecord, utcnow

log = logging.getLogger(__name__)

TOOL_NAME = "record_verdict"
"""The tool every judge request asks its answer through (``lm/prompts.py``)."""
RESULTS_PAGE = 500
"""Results stored (and their tasks routed) per transaction while a batch is read."""
REMEMBERED = 1_024
"""Imports ``BatchJudging`` remembers as unclaimed."""
WAITING: Literal["waiting"] = "waiting"
"""The task's verdict will come from a batch: nothing to judge now."""


def custom_id(task_id: int, judge: int, swapped: bool) -> str:
    return f"t{task_id}-j{judge}-{'ba' if swapped else 'ab'}"


def request_of(custom_id: str) -> tuple[int, bool]:
    """(task id, swapped) of a ``custom_id``."""
    task, _, order = custom_id[1:].split("-")
    return int(task), order == "ba"


@dataclass
class BatchJudging:
    """The batch path of ``Pipeline`` (``jobs/pipeline.py``) and of ``BatchPoller``."""

    settings: Settings
    store: Store
    panel: JudgePanel
    clients: tuple[MessageBatches, ...]
    """One per judge of the panel, in its order."""
    on_results: Callable[[int, list[int]], None] | None = None
    """Told of tasks whose batch answers were stored, so they are routed; the
    ``JobQueue`` sets it."""
    _unclaimed: dict[tuple[int, int], None] = field(default_factory=dict, init=False, repr=False)
    """Imports (project, import) found without claims while not batched, the latest
    ``REMEMBERED``: nobody claims an import that is not batched (only ``_submit`` does, for
    one that is), so their other tasks skip reading the claims: a read less per task
    judged call by call."""
    _unclaimed_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def for_panel(
        cls, settings: Settings, store: Store, panel: JudgePanel | None
    ) -> BatchJudging | None:
        """None when not every judge speaks the Anthropic API (or there is no judge);
        whether an import is batched is the project's ``HYPER_JUDGE_BATCH``."""
        if panel is None:
            return None
        transports = build_transports(settings, os.environ)  # the panel's, unlimited
        if not all(isinstance(t, AnthropicTransport) for t in transports):
            if settings.hyper_judge_batch is not BatchMode.OFF:
                log.warning(
                    "HYPER_JUDGE_BATCH=%s: not every judge speaks the Anthropic API, so "
                    "imports are judged call by call at the standard price",
                    settings.hyper_judge_batch.value,
                )
            return None
        clients = tuple(MessageBatches(t) for t in transports)  # type: ignore[arg-type]
        return cls(settings, store, panel, clients)

    @staticmethod
    def batched(settings: Settings, import_size: int) -> bool:
        """Whether an import of this many tasks goes in batches (the project's settings)."""
        mode = settings.hyper_judge_batch
        return mode is BatchMode.ON or (
            mode is BatchMode.AUTO and import_size >= settings.hyper_judge_batch_min
        )

    # -- from the pipeline -----------------------------------------------------------------

    def answer(
        self,
        settings: Settings,
        record: TaskRecord,
        members: Sequence[int],
        comparison: Comparison,
        alone: bool,
    ) -> PanelResult | Literal["waiting"] | None:
        """The task's verdicts from its batch answers; ``WAITING`` while a batch will
        answer it (sending the import's batch if the task was its last to be read); None
        when it is not batched (or was left out of its import's batches, or ``alone``
        asks for it before they were sent): the caller judges it now."""
        project_id, task_id, batch = record.project_id, record.task_id, record.import_batch
        if batch is None:  # batches are an import's
            return None
        batched = self.batched(settings, len(members))
        if not batched and (project_id, batch) in self._unclaimed:
            return None
        # The claims first: a batch taken by the API is stored with its requests in one
        # transaction, so requests not seen after a claim seen sent are not in it. An
        # import without claims has no requests: one query, not two, for its tasks.
        claims = self.store.import_batches(project_id, batch)
        items = self.store.batch_items(project_id, task_id) if claims else []
        if items:
            if any(item.outcome is None for item in items):
                return WAITING
            return self._from_items(comparison, items)
        if not batched:
            if not claims:
                self._remember_unclaimed(project_id, batch)
            return None
        if claims:
            return WAITING if any(c.status == "submitting" for c in claims) else None
        if alone:
            return None
        if self.store.unread_in_import(project_id, batch):
            return WAITING  # the worker reading the import's last task sends its batches
        return WAITING if self._submit(project_id, batch, members) else None

    def _remember_unclaimed(self, project_id: int, import_batch: int) -> None:
        with self._unclaimed_lock:
            self._unclaimed[project_id, import_batch] = None
            if len(self._unclaimed) > REMEMBERED:
                del self._unclaimed[next(iter(self._unclaimed))]  # the oldest

    def _from_items(self, comparison: Comparison, items: Sequence[JudgeBatchItem]) -> PanelResult:
        """Each judge's result from the task's batch answers; an order the batch did not
        answer is asked again now."""
        start = time.monotonic()
        answered = {(item.judge, item.swapped): item for item in items}
        results = []
        for index, judge in enumerate(self.panel.judges):
            calls: list[JudgeCall] = []
            for swapped in (False, True):
                item = answered.get((index, swapped))
                if item is not None and item.call is not None:
                    calls.append(JudgeCall.model_validate(item.call))
                else:
                    calls.append(judge.ask(comparison, swapped))
            results.append(judge.result(comparison, calls, time.monotonic() - start))
        return PanelResult(
            comparison_id=comparison.id,
            results=tuple(results),
            latency_s=time.monotonic() - start,
        )

    def _submit(self, project_id: int, import_batch: int, members: Sequence[int]) -> bool:
        """Send the import's batches; False when there was nothing to send or the API
        refused them (its tasks are then judged one by one)."""
        judged = self.store.judge_outputs(project_id, members)
        tasks = [
            (record.task_id, Comparison.model_validate(record.comparison))
            for record in self.store.tasks(project_id, members)
            if record.comparison is not None and record.task_id not in judged
        ]
        if not tasks:
            return False
        groups = []
        for index, judge in enumerate(self.panel.judges):
            items = [
                BatchItem(custom_id(task_id, index, swapped), judge.request(comparison, swapped))
                for task_id, comparison in tasks
                for swapped in (False, True)
            ]
            packed = pack(items, self.clients[index].transport)
            groups.extend((index, part, group) for part, group in enumerate(packed))
        claims = self.store.claim_batches(
            project_id,
            import_batch,
            [(i, part, self.panel.judges[i].model, len(g)) for i, part, g in groups],
        )
        if claims is None:
            return True  # another worker (or process) claimed them first: it sends them
        sent = False
        for claim, (index, _, group) in zip(claims, groups, strict=True):
            sent = self._send(project_id, claim, index, group) or sent
        return sent

    def _send(
        self, project_id: int, claim: JudgeBatchRecord, judge: int, group: Sequence[BatchItem]
    ) -> bool:
        try:
            batch = self.clients[judge].submit(group)
        except TransientLMError:
            self.store.release_batch(claim.id)  # sent again when the job is retried
            raise
        except LMError as error:
            log.warning(
                "project %d: the Message Batches API refused %d requests (%s): they are "
                "judged one by one",
                project_id,
                len(group),
                error,
            )
            self.store.refuse_batch(claim.id, str(error))  # the poller routes them again
            return False
        requests = [(item.custom_id, *request_of(item.custom_id)) for item in group]
        self.store.batch_submitted(
            claim.id,
            batch.id,
            batch.expires_at,
            [
                {
                    "custom_id": key,
                    "project_id": project_id,
                    "task_id": task_id,
                    "judge": judge,
                    "swapped": swapped,
                }
                for key, task_id, swapped in requests
            ],
        )
        log.info(
            "project %d: %d judge requests (%d tasks) sent in Message Batch %s to %s",
            project_id,
            len(group),
            len({task_id for _, task_id, _ in requests}),
            batch.id,
            self.clients[judge].model,
        )
        return True

    # -- from the poller -------------------------------------------------------------------

    def poll(self) -> int:
        """Look at every batch in flight once, storing the results of those that ended;
        returns how many are still in flight."""
        stale = utcnow() - timedelta(seconds=2 * self.settings.hyper_judge_timeout + 30)
        for project_id, import_batch in self.store.release_stale_claims(stale):
            log.warning(
                "project %d: a batch claimed for import %d was never sent (its sender "
                "stopped): the import's tasks are routed again",
                project_id,
                import_batch,
            )
            self._route(project_id, self.store.import_tasks(project_id, import_batch))
        for record in self.store.unhandled_refusals():
            self.store.finish_batch(record.id, "refused", record.error)
            self._route(
                record.project_id, self.store.import_tasks(record.project_id, record.import_batch)
            )
        pending = 0
        for record in self.store.open_batches():
            try:
                pending += not self._collect(record)
            except LMError as error:
                log.warning("Message Batch %s could not be read now: %s", record.batch_id, error)
                pending += 1
        return pending

    def _collect(self, record: JudgeBatchRecord) -> bool:
        """Store the batch's results if it has ended; whether it has."""
        client = self.clients[record.judge]
        try:
            state = client.state(record.batch_id)
            if not state.ended:
                return False
            page: list[BatchResult] = []
            for result in client.results(record.batch_id, TOOL_NAME):
                page.append(result)
                if len(page) >= RESULTS_PAGE:
                    self._store_page(record, page)
                    page = []
            self._store_page(record, page)
        except BatchGone as error:
            log.warning(
                "Message Batch %s is gone (%s): its tasks are judged one by one",
                record.batch_id,
                error,
            )
            unanswered = self.store.finish_batch(record.id, "gone", str(error))
        else:
            unanswered = self.store.finish_batch(record.id, "done")
            log.info("Message Batch %s ended: %s", record.batch_id, state.counts)
        self._route(record.project_id, unanswered)  # the others were routed page by page
        return True

    def _store_page(self, record: JudgeBatchRecord, page: Sequence[BatchResult]) -> None:
        if not page:
            return
        judge = self.panel.judges[record.judge]
        waited = (utcnow() - _aware(record.created_at)).total_seconds()
        rows = []
        for result in page:
            row: dict[str, object] = {"custom_id": result.custom_id, "outcome": result.outcome}
            if result.completion is not None:
                outcome = CallOutcome(result.completion, None, 1, waited)
                call = judge.answer(request_of(result.custom_id)[1], outcome, batch=True)
                row |= {
                    "call": call.model_dump(mode="json"),
                    "input_tokens": call.input_tokens,
                    "output_tokens": call.output_tokens,
                    "cost_usd": call.cost_usd,
                    "list_cost_usd": call.cost_usd / BATCH_DISCOUNT,
                }
            rows.append(row)
        self._route(record.project_id, self.store.save_batch_results(record.id, rows))

    def _route(self, project_id: int, task_ids: list[int]) -> None:
        if task_ids and self.on_results is not None:
            self.on_results(project_id, task_ids)


def _aware(moment: datetime) -> datetime:
    """SQLite gives back the stored UTC times without their zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class BatchPoller:
    """A thread polling the batches in flight every ``HYPER_JUDGE_BATCH_POLL`` seconds."""

    def __init__(self, batches: BatchJudging, interval: float) -> None:
        self._batches = batches
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._batches.poll()
            except Exception:  # the poller must outlive a database or network hiccup
                log.exception("polling the Message Batches failed; trying again")
