"""The import flow: read each task, judge it, decide its import, write the decisions back.

Each step stores its result before the next begins, so re-running ``route_task`` after a
crash or a duplicated webhook only finishes what is missing: a task read or judged before
is not read or judged again, and a decision is made exactly once (the store refuses a
second).

Decisions come from the ``CampaignPolicy`` (``core/policy.py``), the one the offline replay
runs. The tasks of one import (one ``TASKS_CREATED`` webhook) are judged one by one, by
whichever workers run them, and decided together, ranked against each other, by the worker
that finishes judging the last of them; an import smaller than the policy's
``min_batch`` is decided task by task as each is judged (the streaming rule). ``/predict``
on a task whose import is still being judged does not wait for it: the task is judged if
need be and decided on its own by the streaming rule (its import's allowance then counts
it), so Label Studio gets its answer within a task's judging time.

A big import (``SETTLE_FROM`` tasks or more) does not wait for all of it to be judged to show
what it can: each time its unjudged tasks halve, the worker that judged the last chunk
settles the judged tasks whose decision the ranked rule is sure of whatever the rest
turns out to be (``CampaignPolicy.settle``: most of those going to the judge, and near the
end the highest scores going to humans), and queues their write-back, which runs while the
rest is judged. The import's final decision ranks them with the rest and changes none.

A big import may be judged through Anthropic's Message Batches API instead, at half the
price (``jobs/batches.py``): its tasks are read as usual, then wait for their batch's
answers, and are decided together as soon as the last of them is judged.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial

from hyper_ls_backend.core.comparison import Comparison, JudgeVerdict
from hyper_ls_backend.core.policy import (
    MIN_RANKED_BATCH,
    CampaignPolicy,
    Candidate,
    Decision,
    LedgerState,
    Route,
)
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.jobs.batches import WAITING, BatchJudging
from hyper_ls_backend.lm import JudgePanel, PanelResult, Tagger
from hyper_ls_backend.lm.batch import map_bounded, run_together
from hyper_ls_backend.ls.client import LabelStudioClient, WriteBack
from hyper_ls_backend.ls.label_config import (
    PreferenceConfig,
    parse_label_config,
    task_to_comparison,
)
from hyper_ls_backend.settings import AIMode, Settings
from hyper_ls_backend.store import Store
from hyper_ls_backend.store.schema import DecisionRecord, JudgeOutput, TaskRecord

log = logging.getLogger(__name__)

NO_JUDGE_REASON = "no LM judge configured: every task goes to humans"
REASONS_IN_SUMMARY = 2
FIGURES = re.compile(r"\s*(?:\[[^\]]*\]|\([^)]*\d[^)]*\))")
"""A reason's figures: "(0.55)", "(0.2-0.4)", "[judge_confidence -0.120]"."""
LOCK_STRIPES = 16_384
"""Enough that a write-back holding the stripes of a few hundred tasks seldom holds up
the judging of others (each task is judged under its stripe); about 1.6 MB of locks."""
SETTLE_FROM = 200
"""Imports at least this big settle part of their tasks before the rest is judged."""
SETTLE_LAST = 16
"""An import settles until a 1/SETTLE_LAST of it is left to judge."""
WRITE_SLICE = 2_000
"""Decisions written back in one go: Label Studio takes a slice's predictions,
annotations and fields in a few bulk calls, each growing with the slice."""


class RouterRegistry:
    """The router each project routes with: its adopted version, else the prior (also when
    the adopted version was fitted by an earlier release on other features: it is logged
    once and the project starts again from the prior)."""

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
                try:
                    self._cache[version.version] = Router.from_dict(version.artifact)
                except ValueError as error:
                    log.warning(
                        "project %d: its router %s cannot be used (%s); routing with the "
                        "prior until the next refit",
                        project_id,
                        version.version,
                        error,
                    )
                    self._cache[version.version] = self.prior
            return self._cache[version.version]


@dataclass(frozen=True)
class Progress:
    """What the store holds of some tasks: each as received (and read), which are judged,
    which decided."""

    records: dict[int, TaskRecord]
    judged: set[int]
    decided: set[int]


@dataclass
class Pipeline:
    settings: Settings
    store: Store
    routers: RouterRegistry
    judge: JudgePanel | None
    """Every judge of the project's panel (one judge is a panel of one)."""
    tagger: Tagger | None
    label_studio: LabelStudioClient | None
    on_decided: Callable[[int, list[int]], None] | None = None
    """Told of tasks decided along with the one being routed (the rest of its import), so
    their write-back is queued; the ``JobQueue`` sets it. Until it runs them, they are
    decided but unwritten, which a restart resumes."""

    batches: BatchJudging | None = field(init=False)
    """The Message Batches path, when ``HYPER_JUDGE_BATCH`` and the panel allow it."""
    _task_locks: list[threading.Lock] = field(
        default_factory=lambda: [threading.Lock() for _ in range(LOCK_STRIPES)],
        init=False,
        repr=False,
    )
    """Two jobs for one task (a duplicated webhook, jobs left in the queue by a crash and
    the same tasks resumed at start, /predict during an import) run one after the other in
    this process, so the judge is paid once and the write-back never creates a second
    prediction or annotation."""

    _epochs: list[int] = field(default_factory=lambda: [0] * LOCK_STRIPES, init=False, repr=False)
    """Per stripe, how many times a task of it was read or judged in this process (moved
    under the stripe): what ``route_tasks`` read of a task before taking its stripe is
    still true if the count has not moved since (other processes may judge it meanwhile,
    as they may today: the store still decides it once)."""

    _settled_at: dict[tuple[int, int], int] = field(default_factory=dict, init=False, repr=False)
    """Per import (project, first task) being judged, its unjudged tasks when it last
    settled: it settles again once they have halved."""
    _marks_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    """Guards ``_settled_at``, ``_writing`` and ``_writers``."""
    _writing: set[tuple[int, int]] = field(default_factory=set, init=False, repr=False)
    """(project, task) being written back in this process: nobody else needs to."""
    _writers: dict[int, threading.Lock] = field(default_factory=dict, init=False, repr=False)
    """One write-back at a time per project: Label Studio (one process) does not write
    faster for being asked several at once, and each slows the others: without the judge's
    token, 4 writes of one 720-task import at once (its settled tasks and the rest), each
    annotating task by task on 8 threads, took 142-240 s each."""

    def __post_init__(self) -> None:
        self.batches = BatchJudging.for_panel(self.settings, self.store, self.judge)

    def route_task(
        self, project_id: int, task_id: int, alone: bool = False
    ) -> DecisionRecord | None:
        """Read and judge one received task (if not yet done), decide it with its import
        (see the module docstring; ``alone``: without waiting for the import), and make sure
        Label Studio shows the decision. None while its import is still being judged."""
        with self._task_lock(project_id, task_id):
            decision, made = self._route_task(project_id, task_id, alone)
        others = [record.task_id for record in made if record.task_id != task_id]
        if others and self.on_decided is not None:
            self.on_decided(project_id, others)
        return decision

    def route_tasks(self, project_id: int, task_ids: Sequence[int]) -> list[int]:
        """Route a queue job's chunk of tasks as ``route_task`` routes each, but all at
        once: every task is read, tagged and judged at the same time (the process's one LM
        limiter bounds the requests in flight, not this worker thread), then the chunk's
        decisions are written back in bulk, or, decided with the rest of their import,
        handed to one write job for all of it (``on_decided``). Each import the chunk holds
        is looked up, and decided or settled, once. Returns the tasks that failed, each
        logged; the others are done."""
        settings, config = self._project(project_id)
        failed: list[int] = []
        seen = {task_id: self._epochs[self._stripe(project_id, task_id)] for task_id in task_ids}
        known = self._progress(project_id, task_ids)
        imports = self._imports(project_id, task_ids, known.records, failed)

        def prepare(item: tuple[int, Sequence[int]]) -> None:
            task_id, members = item
            stripe = self._stripe(project_id, task_id)
            try:
                with self._task_locks[stripe]:
                    # Read in bulk before the lock: still true unless this process read or
                    # judged a task of the stripe since (a duplicated job, say).
                    now = known
                    if self._epochs[stripe] != seen[task_id]:
                        now = self._progress(project_id, [task_id])
                    if task_id not in now.decided:
                        record, judged = now.records[task_id], task_id in now.judged
                        self._prepare(project_id, record, judged, config, settings, False, members)
            except Exception:
                log.exception("routing task %d of project %d failed", task_id, project_id)
                failed.append(task_id)

        items = [(task_id, members) for members, group in imports for task_id in group]
        map_bounded(prepare, items, max(1, len(items)))
        made: set[int] = set()
        settled: set[int] = set()
        whole: set[int] = set()
        for members, group in imports:
            judged = [task_id for task_id in group if task_id not in failed]
            try:
                decided, early = self._decide_judged(project_id, judged, members, settings, config)
            except Exception:
                log.exception("deciding tasks %s of project %d failed", judged, project_id)
                failed += judged
                continue
            made |= decided
            settled |= set(early)
            if decided and len(members) >= MIN_RANKED_BATCH:
                whole |= set(members)  # decided now, with what settled of it before
        done = [task_id for task_id in task_ids if task_id not in failed]
        if made - set(task_ids) and self.on_decided is not None:
            # Decided with the rest of its import: one write job for all of it, this chunk
            # too. Not as "fresh": until it runs, another job or /predict may write some.
            self.on_decided(project_id, sorted(whole | made | set(done)))
        elif self.label_studio is not None:
            ours = made | settled  # written now; the chunk's others decided elsewhere
            failed += self._write_decided(project_id, sorted(ours), ours, config, settings)
            failed += self._hand_over(project_id, [t for t in done if t not in ours])
        return failed

    def _task_lock(self, project_id: int, task_id: int) -> threading.Lock:
        """The task's stripe of ``_task_locks``."""
        return self._task_locks[self._stripe(project_id, task_id)]

    @staticmethod
    def _stripe(project_id: int, task_id: int) -> int:
        return hash((project_id, task_id)) % LOCK_STRIPES

    def _writer(self, project_id: int) -> threading.Lock:
        """The project's write-back lock: taken last, after the tasks' stripes (nothing
        waits for a stripe while holding it), so it cannot deadlock with them."""
        with self._marks_lock:
            return self._writers.setdefault(project_id, threading.Lock())

    @contextmanager
    def _marked_writing(self, project_id: int, task_ids: Sequence[int]) -> Iterator[None]:
        keys = {(project_id, task_id) for task_id in task_ids}
        with self._marks_lock:
            self._writing |= keys
        try:
            yield
        finally:
            with self._marks_lock:
                self._writing -= keys

    def _hand_over(self, project_id: int, task_ids: Sequence[int]) -> list[int]:
        """Queue the write-back of those of the tasks decided by others and not yet written
        (before a restart, or by the job deciding or settling their import just now, whose
        write comes first and leaves this one nothing to do); returns the tasks that
        failed. Written here only when there is no queue. Those being written in this
        process are left to it (its job retries what fails)."""
        found = self.store.decisions(project_id, task_ids)
        with self._marks_lock:
            unwritten = sorted(
                t
                for t, decision in found.items()
                if decision.written_at is None and (project_id, t) not in self._writing
            )
        if not unwritten:
            return []
        if self.on_decided is None:
            settings, config = self._project(project_id)
            return self._write_decided(project_id, unwritten, set(), config, settings)
        self.on_decided(project_id, unwritten)
        return []

    def _progress(self, project_id: int, task_ids: Sequence[int]) -> Progress:
        """What the store holds of the tasks, in three reads however many they are."""
        return Progress(
            records={r.task_id: r for r in self.store.tasks(project_id, task_ids)},
            judged=self.store.judged(project_id, task_ids) if self.judge is not None else set(),
            decided=self.store.decided(project_id, task_ids),
        )

    def _imports(
        self,
        project_id: int,
        task_ids: Sequence[int],
        records: Mapping[int, TaskRecord],
        failed: list[int],
    ) -> list[tuple[list[int], list[int]]]:
        """The chunk's tasks by import: (the import's tasks, the chunk's among them), each
        import read once; a task with no recorded import is one of its own. Tasks not
        received are logged and added to ``failed``."""
        by_batch: dict[int, list[int]] = {}
        imports: list[tuple[list[int], list[int]]] = []
        for task_id in task_ids:
            record = records.get(task_id)
            if record is None:
                log.error("task %d of project %d was never received", task_id, project_id)
                failed.append(task_id)
            elif record.import_batch is None:
                imports.append(([task_id], [task_id]))
            else:
                by_batch.setdefault(record.import_batch, []).append(task_id)
        for group in by_batch.values():
            imports.append((self.store.import_of(project_id, group[0]), group))
        return imports

    def _decide_judged(
        self,
        project_id: int,
        task_ids: Sequence[int],
        members: Sequence[int],
        settings: Settings,
        config: PreferenceConfig,
    ) -> tuple[set[int], list[int]]:
        """Decide what judging ``task_ids`` (of the import ``members``) made decidable:
        each task in order by the streaming rule when the import is small, else the
        import once all of it is judged, or what of it settles. Returns the tasks
        decided, then those settled."""
        if not task_ids:
            return set(), []
        if len(members) < MIN_RANKED_BATCH:
            made: set[int] = set()
            for task_id in task_ids:
                with self._task_lock(project_id, task_id):
                    if self.store.decision(project_id, task_id) is None:
                        decided = self._decide(
                            project_id, task_id, members, settings, config, False
                        )
                        made.update(d.task_id for d in decided)
            return made, []
        unready = self.store.unready_in_import_of(project_id, members[0], self.judge is not None)
        if unready:
            return set(), self._settle(project_id, members, unready, settings, config)
        with self._marks_lock:  # all judged: nothing more of it settles
            self._settled_at.pop((project_id, members[0]), None)
        with self._task_lock(project_id, task_ids[0]):
            decided = self._decide(project_id, task_ids[0], members, settings, config, False)
        return {d.task_id for d in decided}, []

    def _project(self, project_id: int) -> tuple[Settings, PreferenceConfig]:
        project = self.store.project(project_id)
        if project is None:
            raise LookupError(f"project {project_id} is unknown: was the backend connected?")
        return self.settings.for_project(project.extra_params), parse_label_config(
            project.label_config
        )

    def write_back(self, project_id: int, task_ids: Sequence[int]) -> list[int]:
        """Write back the tasks' decisions not yet written, in bulk (``_write_decided``);
        returns the tasks that failed. The queue's write job, for tasks decided along with
        others (``on_decided``)."""
        if self.label_studio is None:
            return []
        settings, config = self._project(project_id)
        return self._write_decided(project_id, task_ids, set(), config, settings)

    def _write_decided(
        self,
        project_id: int,
        task_ids: Sequence[int],
        made: set[int],
        config: PreferenceConfig,
        settings: Settings,
    ) -> list[int]:
        """Write back the decisions of ``task_ids`` not yet written (``made``: just decided,
        so nothing of them can be in Label Studio yet), ``WRITE_SLICE`` at a time, each in
        a few bulk calls (``LabelStudioClient.write_many``); returns the tasks that failed."""
        failed: list[int] = []
        for start in range(0, len(task_ids), WRITE_SLICE):
            chunk = task_ids[start : start + WRITE_SLICE]
            stripes = sorted({self._stripe(project_id, task_id) for task_id in chunk})
            with ExitStack() as held:
                held.enter_context(self._marked_writing(project_id, chunk))
                for stripe in stripes:
                    held.enter_context(self._task_locks[stripe])
                found = self.store.decisions(project_id, chunk)
                decisions = [
                    decision
                    for t in chunk
                    if (decision := found.get(t)) is not None and decision.written_at is None
                ]
                try:
                    self._write(project_id, decisions, made, config, settings)
                except Exception:
                    log.exception(
                        "writing back %d tasks of project %d failed", len(decisions), project_id
                    )
                    failed += [decision.task_id for decision in decisions]
        return failed

    def _settle(
        self,
        project_id: int,
        members: Sequence[int],
        unjudged: int,
        settings: Settings,
        config: PreferenceConfig,
    ) -> list[int]:
        """Settle what can be of the import ``members``, ``unjudged`` of them still to be
        judged, if it is big and they have halved since it last settled (down to a
        sixteenth of it: the rest comes soon); returns the tasks settled."""
        if self.judge is None or len(members) < SETTLE_FROM:
            return []
        key = (project_id, members[0])
        with self._marks_lock:
            last = self._settled_at.get(key, len(members))
            if unjudged > last // 2 or unjudged < len(members) / SETTLE_LAST:
                return []
            self._settled_at[key] = unjudged
        decided = self.store.decisions(project_id, members)
        settled = {t: d.route for t, d in decided.items() if d.settled}
        wanted = [t for t in members if t not in decided or t in settled]
        ready = self._ready_candidates(project_id, wanted)
        router = self.routers.for_project(project_id)
        policy = self._policy(project_id, settings, config, router)

        def settle(ledger: LedgerState, undecided: list[int]) -> list[Decision | None]:
            judged = [ready[t] for t in undecided if t in ready]
            early = [(ready[t], route) for t, route in settled.items()]
            made = policy.settle(judged, len(undecided), ledger, router, early)
            by_task = {int(c.id): d for c, d in zip(judged, made, strict=True)}
            return [by_task.get(t) for t in undecided]

        settled = [r.task_id for r in self.store.decide(project_id, members, settle)]
        log.info(
            "project %d: %d tasks of an import of %d settled with %d still unjudged",
            project_id,
            len(settled),
            len(members),
            unjudged,
        )
        return settled

    def _route_task(
        self, project_id: int, task_id: int, alone: bool
    ) -> tuple[DecisionRecord | None, list[DecisionRecord]]:
        settings, config = self._project(project_id)
        record = self.store.task(project_id, task_id)
        decision, made = self.store.decision(project_id, task_id), []
        if decision is None:
            members = self.store.import_of(project_id, task_id)
            judged = bool(self.store.judged(project_id, [task_id]))
            self._prepare(project_id, record, judged, config, settings, alone, members)
            made = self._decide(project_id, task_id, members, settings, config, alone)
            decision = self.store.decision(project_id, task_id)
        if decision is not None and decision.written_at is None and self.label_studio is not None:
            self._write(project_id, [decision], {m.task_id for m in made}, config, settings)
        return decision, made

    def _prepare(
        self,
        project_id: int,
        record: TaskRecord,
        judged: bool,
        config: PreferenceConfig,
        settings: Settings,
        alone: bool,
        members: Sequence[int],
    ) -> None:
        """Read and judge the task (of the import ``members``; ``judged``: its judge output
        is stored), each step only if it has not been done (and stored). Called under the
        task's stripe, whose epoch each step moves (``_epochs``).
        A task judged call by call is tagged while it is judged (the tagger's request in
        flight with the judge's); one of a batched import is read first, since its batch
        goes once the whole import is read."""
        task_id = record.task_id
        unjudged = self.judge is not None and not judged
        if record.comparison is None and record.problem is None:
            try:
                comparison = task_to_comparison(record.payload, config)
            except ValueError as error:
                self.store.save_comparison(project_id, task_id, None, str(error))
                self._moved(project_id, task_id)
                return
            if self.tagger is not None and comparison.prompt.strip():  # nothing to tag else
                tag = partial(self.tagger.tag, comparison.prompt)
                if unjudged and self._judged_call_by_call(settings, record, members):
                    judge = partial(
                        self._judge, project_id, record, comparison, settings, alone, members
                    )
                    _, tagged = run_together([judge, tag])
                    unjudged = False
                else:
                    tagged = tag()
                comparison = comparison.with_tags(tagged.tags)
            self.store.save_comparison(
                project_id, task_id, comparison.model_dump(mode="json"), None
            )
            self._moved(project_id, task_id)
        elif record.comparison is not None:
            comparison = Comparison.model_validate(record.comparison)
        else:
            return
        if unjudged:
            self._judge(project_id, record, comparison, settings, alone, members)

    def _judged_call_by_call(
        self, settings: Settings, record: TaskRecord, members: Sequence[int]
    ) -> bool:
        """Whether the task's import is judged call by call, not in Message Batches."""
        if self.batches is None or record.import_batch is None:
            return True
        return not self.batches.batched(settings, len(members))

    def _judge(
        self,
        project_id: int,
        record: TaskRecord,
        comparison: Comparison,
        settings: Settings,
        alone: bool,
        members: Sequence[int],
    ) -> None:
        """Judge the task now, or from its batch's answers; nothing while it waits for them."""
        batched = None
        if self.batches is not None:
            batched = self.batches.answer(settings, record, members, comparison, alone)
        if batched == WAITING:
            return
        result = batched if isinstance(batched, PanelResult) else self.judge.judge(comparison)
        self.store.save_judge_output(
            project_id,
            record.task_id,
            verdict=result.verdicts[0].model_dump(mode="json"),
            verdicts=[verdict.model_dump(mode="json") for verdict in result.verdicts],
            calls=[
                {"judge": judged.verdict.model, **call.model_dump(mode="json")}
                for judged in result.results
                for call in judged.calls
            ],
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost_usd=result.cost_usd,
            latency_s=result.latency_s,
            error=result.error,
        )
        self._moved(project_id, record.task_id)

    def _moved(self, project_id: int, task_id: int) -> None:
        """Count a step stored for the task in its stripe's epoch (under the stripe)."""
        self._epochs[self._stripe(project_id, task_id)] += 1

    def _decide(
        self,
        project_id: int,
        task_id: int,
        members: Sequence[int],
        settings: Settings,
        config: PreferenceConfig,
        alone: bool,
    ) -> list[DecisionRecord]:
        """Decide the task's import if all of it is judged, else the task alone if it is
        of a small import or ``alone``; returns the decisions made now."""
        own = self._candidates(project_id, [task_id])
        if own is None:  # waiting for its batch's answers: its import is not all judged
            return []
        router = self.routers.for_project(project_id)
        policy = self._policy(project_id, settings, config, router)
        if len(members) >= policy.min_batch:
            # One count first: reading the whole import for each of its tasks is quadratic.
            unready = self.store.unready_in_import_of(project_id, task_id, self.judge is not None)
            batch = None if unready else self._candidates(project_id, members)
            if batch is not None:
                found = self.store.decisions(project_id, members)
                settled = {t: d.route for t, d in found.items() if d.settled}
                return self._decide_tasks(project_id, members, batch, policy, router, settled)
            if not alone:
                return []
        return self._decide_tasks(project_id, [task_id], own, policy, router)

    def _policy(
        self, project_id: int, settings: Settings, config: PreferenceConfig, router: Router
    ) -> CampaignPolicy:
        """The project's policy: its budget and audits; with a quality target, audits that
        calibrate (at the warm-up share until a threshold is certified for this router)
        and the certificate (``jobs/certification.py``)."""
        if settings.hyper_target_agreement is None:
            return CampaignPolicy(
                settings.hyper_budget, settings.hyper_audit_share, can_prefill_tie=config.has_tie
            )
        looks = self.store.certifications(project_id)
        certificate = looks[-1].certificate(router.version) if looks else None
        audit_share = settings.hyper_audit_share
        if certificate is None:
            audit_share = max(audit_share, settings.hyper_warmup_audit_share)
        return CampaignPolicy(
            settings.hyper_budget,
            audit_share,
            can_prefill_tie=config.has_tie,
            certificate=certificate,
            calibrating=True,
        )

    def _decide_tasks(
        self,
        project_id: int,
        task_ids: Sequence[int],
        candidates: Sequence[Candidate],
        policy: CampaignPolicy,
        router: Router,
        settled: Mapping[int, Route] | None = None,
    ) -> list[DecisionRecord]:
        """Decide the undecided of ``task_ids``, ranked with those ``settled`` earlier (and
        where each went)."""
        by_task = dict(zip(task_ids, candidates, strict=True))
        settled = settled or {}

        def decide(ledger: LedgerState, undecided: list[int]) -> list[Decision]:
            left = set(undecided)
            early = [(by_task[t], r) for t, r in settled.items() if t not in left]
            return policy.decide([by_task[t] for t in undecided], ledger, router, settled=early)

        return self.store.decide(project_id, task_ids, decide)

    def _candidates(self, project_id: int, task_ids: Sequence[int]) -> list[Candidate] | None:
        """The tasks as the policy sees them, in ``task_ids``' order (which is by id);
        None while one of them is not yet read or judged."""
        ready = self._ready_candidates(project_id, task_ids)
        if len(ready) < len(task_ids):
            return None
        return [ready[task_id] for task_id in task_ids]

    def _ready_candidates(self, project_id: int, task_ids: Sequence[int]) -> dict[int, Candidate]:
        """Those of the tasks read (and judged, with a judge) as the policy sees them."""
        records = {r.task_id: r for r in self.store.tasks(project_id, task_ids)}
        outputs = self.store.judge_outputs(project_id, task_ids)
        candidates = {}
        for task_id in task_ids:
            record, key = records[task_id], str(task_id)
            if record.problem is not None:
                candidates[task_id] = Candidate(
                    key, problem=f"task could not be read: {record.problem}"
                )
                continue
            if record.comparison is None:
                continue
            comparison = Comparison.model_validate(record.comparison)
            if self.judge is None:
                candidates[task_id] = Candidate(key, comparison, NO_JUDGE_REASON)
                continue
            output = outputs.get(task_id)
            if output is None:
                continue
            comparison = comparison.with_panel(verdicts_of(output))
            failed = (
                f"judge failed after retries: {output.error}" if comparison.judge_failed else None
            )
            candidates[task_id] = Candidate(key, comparison, failed)
        return candidates

    def _write(
        self,
        project_id: int,
        decisions: Sequence[DecisionRecord],
        made: set[int],
        config: PreferenceConfig,
        settings: Settings,
    ) -> None:
        """Write unwritten decisions back in a few bulk calls and record what each task
        got, all in one transaction (``made``: just decided, see ``_write_decided``). A
        task deleted in Label Studio meanwhile is recorded as written with nothing: the
        decision stays ours and there is nothing to show."""
        outputs = self.store.judge_outputs(project_id, [d.task_id for d in decisions])
        items = [
            self._write_item(d, outputs.get(d.task_id), settings, d.task_id in made)
            for d in decisions
        ]
        with self._writer(project_id):
            written = self.label_studio.write_many(
                project_id, config, items, check_human=bool(settings.hyper_annotators)
            )
        gone = [d.task_id for d in decisions if d.task_id not in written]
        if gone:
            log.warning(
                "tasks %s of project %d were deleted in Label Studio before their decisions "
                "were written back",
                gone,
                project_id,
            )
        if settings.hyper_annotators:
            for decision in decisions:
                if decision.route is Route.HUMAN and decision.task_id in written:
                    self.label_studio.assign(
                        project_id, decision.task_id, settings.hyper_annotators
                    )
        ids = {task_id: (w.prediction_id, w.annotation_id) for task_id, w in written.items()}
        self.store.mark_written(
            project_id, {d.task_id: ids.get(d.task_id, (None, None)) for d in decisions}
        )

    @staticmethod
    def _write_item(
        decision: DecisionRecord, output: JudgeOutput | None, settings: Settings, fresh: bool
    ) -> WriteBack:
        return WriteBack(
            task_id=decision.task_id,
            route=decision.route,
            score=decision.score,
            reason=summarize(decision, verdicts_of(output) if output is not None else []),
            model_version=decision.model_version,
            label=decision.judge_label,
            confidence=decision.judge_confidence,
            annotate=settings.hyper_ai_mode is AIMode.ANNOTATE,
            fresh=fresh,
        )


def verdicts_of(output: JudgeOutput) -> list[JudgeVerdict]:
    """Every judge's stored verdict, the primary's first (one judge before panels)."""
    return [JudgeVerdict.model_validate(v) for v in output.verdicts or [output.verdict]]


def summarize(decision: DecisionRecord, verdicts: Sequence[JudgeVerdict] = ()) -> str:
    """The short ``hyper_reason`` annotators and team leads see in the Data Manager; with a
    panel, every judge's own answer follows. Without the reasons' figures (``FIGURES``), so
    that an import's tasks share few values: Label Studio sets a field in bulk once per
    value. The figures are in the decision (``hyper-ls export``), the judge's confidence in
    the prediction's score."""
    reasons = "; ".join(FIGURES.sub("", r) for r in decision.reasons[:REASONS_IN_SUMMARY])
    panel = (
        " | judges: " + ", ".join(f"{v.model} {v.label or 'failed'}" for v in verdicts)
        if len(verdicts) > 1
        else ""
    )
    if decision.route is Route.AI:
        who = "judges say" if len(verdicts) > 1 else "judge says"
        return f"AI: {who} {decision.judge_label} ({reasons}){panel}"
    return f"human: {reasons}{panel}"
