"""The backend's durable state, behind one small object.

Transactions are short and never wait on the network: judge calls and Label Studio
write-backs happen between them. A transaction that reads a project's rows before adding
to them (recording an import, extending the budget ledger, adopting a router version) holds
the project's lock, so several worker processes never overspend the budget nor insert a row
twice; rows saved by key (judge outputs, labels, tags) are upserted in one statement. On
SQLite the project's lock is the database's write lock, taken when every transaction begins
(``BEGIN IMMEDIATE``); on PostgreSQL a transaction-scoped advisory lock on the project id
(a project row need not exist). Those are the two databases supported.

On SQLite the threads of one process also take turns for that write lock among
themselves (``Store.session``), and a read that writes nothing (``Store.read``) takes
neither; while a request is answered (``Store.serving``) the other threads' database calls
wait. So a webhook waits for the one transaction under way, not for every worker's.
Webhooks answered at once store their imports in one transaction (``receive_imports``),
recorded as tasks after (``record_received``).

A database made by an earlier version starts as is: columns added since are added to it on
start (``add_missing_columns``), all nullable, and so are indexes (``add_missing_indexes``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.core.policy import SCORE_WINDOW, Decision, LedgerState, Route
from hyper_ls_backend.store.schema import (
    Base,
    CertificationRecord,
    DecisionRecord,
    HumanLabel,
    JudgeBatchItem,
    JudgeBatchRecord,
    JudgeOutput,
    Project,
    ReceivedImport,
    RefitRecord,
    RouterVersion,
    TagCacheEntry,
    TaskRecord,
    utcnow,
)
from hyper_ls_backend.store.writers import GroupCommit, Idle, RequestsFirst, WriterTurns

PROJECT_LOCK_CLASS = 0x68_79_70_65
"""First key of the PostgreSQL advisory locks on projects (the second is the project id),
so they cannot collide with another application's locks on the same database."""
REQUEST_PATIENCE = 0.2
"""Seconds a background database call waits at most for requests being answered."""
READ_ONLY = "hyper_read_only"
"""Execution option of ``Store.read``'s transactions: on SQLite they begin deferred."""
RECEIVED_PER_TRANSACTION = 200
"""Received imports recorded per transaction (``Store.record_received``): a backlog left
at a restart is recorded in steps, not in one transaction of its whole size."""


Import = tuple[int, Sequence[dict[str, Any]]]
"""A project id and the tasks imported into it."""


class Labelled(NamedTuple):
    """A labelled task as the learner and ``/status`` read it."""

    record: dict[str, Any]
    """The HyPER pairs record: comparison, judge verdict, human votes."""
    audit: bool
    inclusion_probability: float | None
    """The audit's probability of having been drawn; None when not recorded (a decision
    of an earlier version)."""


def make_engine(url: str) -> Engine:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"DATABASE_URL must be SQLite or PostgreSQL, not {backend}")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_setup(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below decide
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA busy_timeout=30000")

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            reading = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def _lock_project(s: Session, project_id: int) -> None:
    """Hold the project's lock until the transaction ends (see the module's docstring)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(select(func.pg_advisory_xact_lock(PROJECT_LOCK_CLASS, project_id)))


def _record_imports(s: Session, imports: Sequence[Import]) -> list[int]:
    """The imports' new tasks, each import numbered: whatever the number of imports, per
    project one read of the tasks already known and of the last import's number, and one
    insert of every new task. Returns how many tasks of each import were new."""
    ids: dict[int, set[int]] = {}
    for project_id, tasks in imports:
        ids.setdefault(project_id, set()).update(int(t["id"]) for t in tasks)
    known, last_import = {}, {}
    for project_id in sorted(ids):  # locks taken in one order: no deadlock
        _lock_project(s, project_id)
        in_project = TaskRecord.project_id == project_id
        known_ids = select(TaskRecord.task_id).where(
            in_project, TaskRecord.task_id.in_(ids[project_id])
        )
        known[project_id] = set(s.scalars(known_ids))
        last_import[project_id] = (
            s.scalar(select(func.max(TaskRecord.import_batch)).where(in_project)) or 0
        )
    rows, counts = [], []
    for project_id, tasks in imports:
        fresh = {int(t["id"]): t for t in tasks if int(t["id"]) not in known[project_id]}
        if fresh:
            last_import[project_id] += 1
            known[project_id].update(fresh)
        rows.extend(
            {
                "project_id": project_id,
                "task_id": task_id,
                "payload": task,
                "import_batch": last_import[project_id],
            }
            for task_id, task in fresh.items()
        )
        counts.append(len(fresh))
    if rows:  # Core's executemany: ORM objects cost a webhook more than the rest
        s.connection().execute(insert(TaskRecord.__table__), rows)
    return counts


def _upsert(s: Session, model: type[Base], **values: Any) -> None:
    """Insert the row, or update these columns of the row with its primary key. One
    statement: concurrent saves of one key cannot collide, as a read-then-insert would."""
    _upsert_rows(s, model, [values])


def _upsert_rows(s: Session, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> None:
    """``_upsert`` of each row (all with the same columns), in one executemany."""
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    keys = [column.name for column in model.__table__.primary_key]
    statement = dialect.insert(model)
    updates = {name: statement.excluded[name] for name in rows[0] if name not in keys}
    s.execute(statement.on_conflict_do_update(index_elements=keys, set_=updates), list(rows))


def add_missing_columns(engine: Engine) -> list[str]:
    """Add the columns of our tables that the database lacks (it was made by an earlier
    version); returns them as ``table.column``. Only nullable columns are ever added, so
    existing rows stay valid. Two processes starting at once may both try: the loser's
    error is ignored, as the column is there."""
    added = []
    present = inspect(engine)
    for table in Base.metadata.sorted_tables:
        have = {column["name"] for column in present.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            kind = column.type.compile(engine.dialect)
            try:
                with engine.begin() as connection:
                    connection.execute(
                        text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )
            except (OperationalError, ProgrammingError):
                if column.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                    raise
            added.append(f"{table.name}.{column.name}")
    return added


def add_missing_indexes(engine: Engine) -> list[str]:
    """Create the indexes of our tables that the database lacks (made by an earlier
    version); returns their names."""
    present = inspect(engine)
    added = []
    for table in Base.metadata.sorted_tables:
        have = {index["name"] for index in present.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in have:
                index.create(engine, checkfirst=True)
                added.append(index.name)
    return added


class Store:
    def __init__(self, url: str, idle: Idle | None = None) -> None:
        """``idle``: shared with the server's process when this is the queue's consumer
        process (see ``RequestsFirst``)."""
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        add_missing_columns(self.engine)
        add_missing_indexes(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._reads = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        self._ledger_lock = threading.Lock()
        self._requests = RequestsFirst(REQUEST_PATIENCE, idle)
        on_sqlite = self.engine.dialect.name == "sqlite"
        self._writers = WriterTurns() if on_sqlite else None
        self._comparisons = GroupCommit(self._save_comparisons)
        self._judge_outputs = GroupCommit(self._save_judge_outputs)

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Around the answer to a request: the database serves this thread first
        (``RequestsFirst``, ``WriterTurns``) until it leaves."""
        with self._requests.serving():
            yield

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction that holds the project's lock (see the module's docstring).

        On SQLite the process's threads take turns (``WriterTurns``: in order of arrival,
        urgent ones first) before they ask SQLite for its write lock, so none of them waits
        in SQLite's busy handler. That handler polls, sleeping 1, 2, 5... then 100 ms
        between tries, and a newcomer's first try can take the lock from a thread asleep:
        with 50 webhooks arriving at once beside the worker threads, one webhook waited
        1.4 s for a transaction of a few milliseconds. Other processes on the same file
        (``WORKERS`` > 1, the CLI) still meet at SQLite's lock. On PostgreSQL, where
        writers to different projects do not wait for each other, there are no turns.
        """
        self._requests.wait()
        urgent = self._requests.urgent
        turn = self._writers.turn(urgent) if self._writers is not None else nullcontext()
        with turn, self._sessions.begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction for reads only: on SQLite it begins deferred and takes no lock (in
        WAL mode a reader sees the last commit and never waits for a writer). Anything
        that writes, or reads to decide what to write, uses ``session``."""
        self._requests.wait()
        with self._reads.begin() as session:
            yield session

    # -- projects --------------------------------------------------------------------------

    def save_project(
        self, project_id: int, label_config: str, extra_params: dict[str, Any]
    ) -> None:
        with self.session() as s:
            project = s.get(Project, project_id) or Project(id=project_id)
            project.label_config, project.extra_params = label_config, extra_params
            s.add(project)

    def project(self, project_id: int) -> Project | None:
        with self.read() as s:
            return s.get(Project, project_id)

    # -- tasks -----------------------------------------------------------------------------

    def record_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> int:
        """Remember imported tasks (once each), the new ones as one import; returns how
        many were new, once they are committed."""
        return self.record_imports([(project_id, tasks)])[0]

    def record_imports(self, imports: Sequence[Import]) -> list[int]:
        """``record_tasks`` of each import, in order, in one transaction."""
        with self.session() as s:
            return _record_imports(s, imports)

    def receive_imports(self, imports: Sequence[Import]) -> None:
        """Keep imports as they came, for ``record_received``: one insert whatever their
        number (the webhooks answered at once share it: ``ImportInbox``)."""
        with self.session() as s:
            s.connection().execute(
                insert(ReceivedImport.__table__),
                [{"project_id": project_id, "tasks": list(tasks)} for project_id, tasks in imports],
            )

    def record_received(self, limit: int = RECEIVED_PER_TRANSACTION) -> list[Import]:
        """Record the first ``limit`` imports received (``receive_imports``) as
        ``record_imports`` does, in order of arrival, and forget them, in one transaction;
        returns them (empty: none was left). Another process's transaction skips the
        imports this one holds (PostgreSQL; on SQLite they take turns)."""
        with self.session() as s:
            received = s.execute(
                select(ReceivedImport.id, ReceivedImport.project_id, ReceivedImport.tasks)
                .order_by(ReceivedImport.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not received:
                return []
            imports = [(row.project_id, row.tasks) for row in received]
            _record_imports(s, imports)
            s.execute(delete(ReceivedImport).where(ReceivedImport.id.in_([r.id for r in received])))
        return imports

    def received_count(self) -> int:
        """Imports received and not yet recorded (``record_received``)."""
        with self.read() as s:
            return s.scalar(select(func.count()).select_from(ReceivedImport)) or 0

    def import_of(self, project_id: int, task_id: int) -> list[int]:
        """The tasks of the import ``task_id`` came in, by id; only itself when it has no
        recorded import (stored by an earlier version)."""
        with self.read() as s:
            batch = s.scalar(
                select(TaskRecord.import_batch).where(
                    TaskRecord.project_id == project_id, TaskRecord.task_id == task_id
                )
            )
            if batch is None:
                return [task_id]
            return list(
                s.scalars(
                    select(TaskRecord.task_id)
                    .where(TaskRecord.project_id == project_id, TaskRecord.import_batch == batch)
                    .order_by(TaskRecord.task_id)
                )
            )

    def tasks(self, project_id: int, task_ids: Sequence[int]) -> list[TaskRecord]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(TaskRecord)
                    .where(TaskRecord.project_id == project_id, TaskRecord.task_id.in_(task_ids))
                    .order_by(TaskRecord.task_id)
                )
            )

    def task(self, project_id: int, task_id: int) -> TaskRecord | None:
        with self.read() as s:
            return s.get(TaskRecord, (project_id, task_id))

    def undecided_tasks(self) -> list[tuple[int, int]]:
        """(project, task) pairs received but not yet routed, oldest first."""
        with self.read() as s:
            rows = s.execute(
                select(TaskRecord.project_id, TaskRecord.task_id)
                .outerjoin(
                    DecisionRecord,
                    (DecisionRecord.project_id == TaskRecord.project_id)
                    & (DecisionRecord.task_id == TaskRecord.task_id),
                )
                .where(DecisionRecord.task_id.is_(None))
                .order_by(TaskRecord.received_at, TaskRecord.task_id)
            )
            return [(p, t) for p, t in rows]

    def save_comparison(
        self, project_id: int, task_id: int, comparison: dict[str, Any] | None, problem: str | None
    ) -> None:
        """Store what the task reads as (or why it cannot be read). Saves made at once by
        background threads share the transaction (``GroupCommit``); a request's is made
        at once, never behind theirs."""
        row = {
            "project_id": project_id,
            "task_id": task_id,
            "comparison": comparison,
            "problem": problem,
        }
        self._comparisons.submit(row, alone=self._requests.urgent)

    def _save_comparisons(self, rows: Sequence[dict[str, Any]]) -> list[None]:
        with self.session() as s:
            s.execute(update(TaskRecord), list(rows))  # by primary key
        return [None] * len(rows)

    # -- judge -----------------------------------------------------------------------------

    def save_judge_output(self, project_id: int, task_id: int, **fields: Any) -> None:
        """Store the task's judge output, as ``save_comparison`` does: an import judged 16
        calls at a time committed each output alone, 17% of the queue consumer's time
        (``docs/benchmarks.md``)."""
        row = {"project_id": project_id, "task_id": task_id, **fields}
        self._judge_outputs.submit(row, alone=self._requests.urgent)

    def _save_judge_outputs(self, rows: Sequence[dict[str, Any]]) -> list[None]:
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            by_columns.setdefault(tuple(row), []).append(row)
        with self.session() as s:
            for same in by_columns.values():
                _upsert_rows(s, JudgeOutput, same)
        return [None] * len(rows)

    def judge_outputs(self, project_id: int, task_ids: Sequence[int]) -> dict[int, JudgeOutput]:
        with self.read() as s:
            outputs = s.scalars(
                select(JudgeOutput).where(
                    JudgeOutput.project_id == project_id, JudgeOutput.task_id.in_(task_ids)
                )
            )
            return {output.task_id: output for output in outputs}

    def judged(self, project_id: int, task_ids: Sequence[int]) -> set[int]:
        """Those of the tasks with a judge output, in one read of their ids."""
        with self.read() as s:
            return set(
                s.scalars(
                    select(JudgeOutput.task_id).where(
                        JudgeOutput.project_id == project_id, JudgeOutput.task_id.in_(task_ids)
                    )
                )
            )

    def judge_output(self, project_id: int, task_id: int) -> JudgeOutput | None:
        return self.judge_outputs(project_id, [task_id]).get(task_id)

    # -- judge batches (jobs/batches.py) ---------------------------------------------------

    def unready_in_import_of(self, project_id: int, task_id: int, judged: bool) -> int:
        """Tasks of ``task_id``'s import not ready to decide: not yet read, or (``judged``)
        readable but without a judge output. One count, however big the import."""
        with self.read() as s:
            batch = s.scalar(
                select(TaskRecord.import_batch).where(
                    TaskRecord.project_id == project_id, TaskRecord.task_id == task_id
                )
            )
            if batch is None:
                return 0
            unread = TaskRecord.comparison.is_(None) & TaskRecord.problem.is_(None)
            waiting = unread
            if judged:
                output = select(JudgeOutput.task_id).where(
                    JudgeOutput.project_id == project_id,
                    JudgeOutput.task_id == TaskRecord.task_id,
                )
                waiting = unread | (TaskRecord.comparison.is_not(None) & ~output.exists())
            return (
                s.scalar(
                    select(func.count()).where(
                        TaskRecord.project_id == project_id,
                        TaskRecord.import_batch == batch,
                        waiting,
                    )
                )
                or 0
            )

    def unread_in_import(self, project_id: int, import_batch: int) -> int:
        """Tasks of the import not yet read (neither a comparison nor a problem stored)."""
        with self.read() as s:
            return (
                s.scalar(
                    select(func.count()).where(
                        TaskRecord.project_id == project_id,
                        TaskRecord.import_batch == import_batch,
                        TaskRecord.comparison.is_(None),
                        TaskRecord.problem.is_(None),
                    )
                )
                or 0
            )

    def claim_batches(
        self, project_id: int, import_batch: int, parts: Sequence[tuple[int, int, str, int]]
    ) -> list[JudgeBatchRecord] | None:
        """Claim the batches (judge, part, model, requests) of an import, ``submitting``;
        None when they were claimed already (by another worker or process)."""
        records = [
            JudgeBatchRecord(
                project_id=project_id,
                import_batch=import_batch,
                judge=judge,
                part=part,
                model=model,
                status="submitting",
                requests=requests,
            )
            for judge, part, model, requests in parts
        ]
        try:
            with self.session() as s:
                s.add_all(records)
        except IntegrityError:
            return None
        return records

    def batch_submitted(
        self, record_id: int, batch_id: str, expires_at: datetime, items: Sequence[dict[str, Any]]
    ) -> None:
        """The API took the claimed batch: its id and its requests (``JudgeBatchItem``
        fields), in one transaction."""
        with self.session() as s:
            record = s.get(JudgeBatchRecord, record_id)
            record.batch_id, record.expires_at, record.status = batch_id, expires_at, "in_progress"
            s.add_all(JudgeBatchItem(batch=record_id, **item) for item in items)

    def release_batch(self, record_id: int) -> None:
        """Forget a claim whose batch was not sent (it may be claimed again)."""
        with self.session() as s:
            record = s.get(JudgeBatchRecord, record_id)
            if record is not None and record.batch_id is None:
                s.delete(record)

    def release_stale_claims(self, older_than: datetime) -> list[tuple[int, int]]:
        """Forget claims still ``submitting`` since before ``older_than``: their sender
        died before the API answered (or before the answer was stored); returns their
        (project, import)."""
        with self.session() as s:
            stale = list(
                s.scalars(
                    select(JudgeBatchRecord).where(
                        JudgeBatchRecord.status == "submitting",
                        JudgeBatchRecord.created_at < older_than,
                    )
                )
            )
            for record in stale:
                s.delete(record)
            return sorted({(record.project_id, record.import_batch) for record in stale})

    def import_tasks(self, project_id: int, import_batch: int) -> list[int]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(TaskRecord.task_id)
                    .where(
                        TaskRecord.project_id == project_id,
                        TaskRecord.import_batch == import_batch,
                    )
                    .order_by(TaskRecord.task_id)
                )
            )

    def refuse_batch(self, record_id: int, error: str) -> None:
        """The API would not take the claimed batch: ``refused``, its import's tasks yet
        to be routed again (``ended_at`` unset until ``finish_batch``)."""
        with self.session() as s:
            record = s.get(JudgeBatchRecord, record_id)
            record.status, record.error = "refused", error

    def unhandled_refusals(self) -> list[JudgeBatchRecord]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(JudgeBatchRecord).where(
                        JudgeBatchRecord.status == "refused", JudgeBatchRecord.ended_at.is_(None)
                    )
                )
            )

    def finish_batch(self, record_id: int, status: str, error: str | None = None) -> list[int]:
        """The batch is ``done`` (results stored), ``gone`` or ``refused``: requests still
        without an outcome end ``expired`` (they will get no answer from it); returns the
        tasks they belong to."""
        with self.session() as s:
            record = s.get(JudgeBatchRecord, record_id)
            record.status, record.error, record.ended_at = status, error, utcnow()
            unanswered = (JudgeBatchItem.batch == record_id) & JudgeBatchItem.outcome.is_(None)
            tasks = sorted(set(s.scalars(select(JudgeBatchItem.task_id).where(unanswered))))
            s.execute(update(JudgeBatchItem).where(unanswered).values(outcome="expired"))
            return tasks

    def import_batches(self, project_id: int, import_batch: int) -> list[JudgeBatchRecord]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(JudgeBatchRecord).where(
                        JudgeBatchRecord.project_id == project_id,
                        JudgeBatchRecord.import_batch == import_batch,
                    )
                )
            )

    def open_batches(self) -> list[JudgeBatchRecord]:
        """Batches sent and not yet read back, oldest first."""
        with self.read() as s:
            return list(
                s.scalars(
                    select(JudgeBatchRecord)
                    .where(JudgeBatchRecord.status == "in_progress")
                    .order_by(JudgeBatchRecord.id)
                )
            )

    def batch_items(self, project_id: int, task_id: int) -> list[JudgeBatchItem]:
        """The task's requests in every batch."""
        with self.read() as s:
            return list(
                s.scalars(
                    select(JudgeBatchItem).where(
                        JudgeBatchItem.project_id == project_id, JudgeBatchItem.task_id == task_id
                    )
                )
            )

    def save_batch_results(self, record_id: int, results: Sequence[dict[str, Any]]) -> list[int]:
        """Store requests' outcomes (``custom_id``, ``outcome`` and, when they succeeded, the
        call with its tokens and costs); returns the tasks they belong to."""
        with self.session() as s:
            for result in results:
                s.execute(
                    update(JudgeBatchItem)
                    .where(
                        JudgeBatchItem.batch == record_id,
                        JudgeBatchItem.custom_id == result["custom_id"],
                    )
                    .values(**{k: v for k, v in result.items() if k != "custom_id"})
                )
            ids = [result["custom_id"] for result in results]
            return sorted(
                set(
                    s.scalars(
                        select(JudgeBatchItem.task_id).where(
                            JudgeBatchItem.batch == record_id, JudgeBatchItem.custom_id.in_(ids)
                        )
                    )
                )
            )

    def batches_of(self, project_id: int) -> list[JudgeBatchRecord]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(JudgeBatchRecord)
                    .where(JudgeBatchRecord.project_id == project_id)
                    .order_by(JudgeBatchRecord.id)
                )
            )

    def batch_spend(self, project_id: int) -> dict[str, float]:
        """What the project's answered batch requests cost, and would have at list price."""
        with self.read() as s:
            calls, cost, listed, tokens_in, tokens_out = s.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(JudgeBatchItem.cost_usd), 0.0),
                    func.coalesce(func.sum(JudgeBatchItem.list_cost_usd), 0.0),
                    func.coalesce(func.sum(JudgeBatchItem.input_tokens), 0),
                    func.coalesce(func.sum(JudgeBatchItem.output_tokens), 0),
                ).where(
                    JudgeBatchItem.project_id == project_id,
                    JudgeBatchItem.outcome == "succeeded",
                )
            ).one()
        return {
            "calls": int(calls),
            "cost_usd": float(cost),
            "list_cost_usd": float(listed),
            "input_tokens": int(tokens_in),
            "output_tokens": int(tokens_out),
        }

    # -- decisions -------------------------------------------------------------------------

    def decide(
        self,
        project_id: int,
        task_ids: Sequence[int],
        decide: Callable[[LedgerState, list[int]], Sequence[Decision | None]],
    ) -> list[DecisionRecord]:
        """Decide those of ``task_ids`` that have no decision yet, with
        ``decide(ledger, undecided)`` (one ``Decision`` per undecided task, in its order, or
        None to leave that task undecided for now); returns the decisions made now (none
        when all were decided already).

        Reading the ledger and writing the decisions happen in one locked transaction, so
        concurrent workers never overspend the budget nor decide a task twice.
        """
        with self._ledger_lock, self.session() as s:
            _lock_project(s, project_id)
            decided = set(
                s.scalars(
                    select(DecisionRecord.task_id).where(
                        DecisionRecord.project_id == project_id,
                        DecisionRecord.task_id.in_(task_ids),
                    )
                )
            )
            undecided = [t for t in dict.fromkeys(task_ids) if t not in decided]
            if not undecided:
                return []
            ledger = self._ledger(s, project_id)
            decisions = list(decide(ledger, undecided))
            if len(decisions) != len(undecided):
                raise ValueError(f"{len(decisions)} decisions for {len(undecided)} tasks")
            made = [(t, d) for t, d in zip(undecided, decisions, strict=True) if d is not None]
            records = [
                DecisionRecord.of(project_id, task_id, ledger.n_decided + k, decision)
                for k, (task_id, decision) in enumerate(made, start=1)
            ]
            s.add_all(records)
            return records

    def _ledger(self, s: Session, project_id: int) -> LedgerState:
        in_project = DecisionRecord.project_id == project_id
        n_decided = s.scalar(select(func.count()).where(in_project)) or 0
        n_human = (
            s.scalar(select(func.count()).where(in_project, DecisionRecord.route == Route.HUMAN))
            or 0
        )
        recent = s.scalars(
            select(DecisionRecord.score)
            .where(in_project)
            .order_by(DecisionRecord.sequence.desc())
            .limit(SCORE_WINDOW)
        ).all()
        labels = (HumanLabel.project_id == project_id) & HumanLabel.deleted.is_(False)
        n_labels = s.scalar(select(func.count()).where(labels)) or 0
        n_ties = s.scalar(select(func.count()).where(labels, HumanLabel.label == Label.TIE)) or 0
        return LedgerState(
            n_decided=n_decided,
            n_human=n_human,
            recent_scores=tuple(reversed(recent)),
            human_labels=n_labels,
            human_ties=n_ties,
        )

    def decision(self, project_id: int, task_id: int) -> DecisionRecord | None:
        with self.read() as s:
            return s.get(DecisionRecord, (project_id, task_id))

    def decided(self, project_id: int, task_ids: Sequence[int]) -> set[int]:
        """Those of the tasks with a decision, in one read of their ids."""
        with self.read() as s:
            return set(
                s.scalars(
                    select(DecisionRecord.task_id).where(
                        DecisionRecord.project_id == project_id,
                        DecisionRecord.task_id.in_(task_ids),
                    )
                )
            )

    def decisions(self, project_id: int, task_ids: Sequence[int]) -> dict[int, DecisionRecord]:
        """The decisions of those of ``task_ids`` that have one, in one read."""
        with self.read() as s:
            records = s.scalars(
                select(DecisionRecord).where(
                    DecisionRecord.project_id == project_id, DecisionRecord.task_id.in_(task_ids)
                )
            )
            return {record.task_id: record for record in records}

    def unwritten_decisions(self) -> list[DecisionRecord]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(DecisionRecord)
                    .where(DecisionRecord.written_at.is_(None))
                    .order_by(DecisionRecord.project_id, DecisionRecord.sequence)
                )
            )

    def mark_written(
        self, project_id: int, written: Mapping[int, tuple[int | None, int | None]]
    ) -> None:
        """Record decisions as written back, with each task's prediction and annotation
        ids (``task_id: (prediction_id, annotation_id)``), in one transaction."""
        now = utcnow()
        with self.session() as s:
            records = s.scalars(
                select(DecisionRecord).where(
                    DecisionRecord.project_id == project_id,
                    DecisionRecord.task_id.in_(list(written)),
                )
            )
            for record in records:
                record.written_at = now
                record.prediction_id, record.annotation_id = written[record.task_id]

    def decision_counts(self) -> dict[tuple[int, Route], int]:
        with self.read() as s:
            rows = s.execute(
                select(DecisionRecord.project_id, DecisionRecord.route, func.count()).group_by(
                    DecisionRecord.project_id, DecisionRecord.route
                )
            )
            return {(p, r): n for p, r, n in rows}

    # -- human labels ----------------------------------------------------------------------

    def save_human_label(self, annotation_id: int, project_id: int, **fields: Any) -> None:
        """Save a label, new or changed, and count it toward the project's next refit."""
        with self.session() as s:
            _upsert(
                s,
                HumanLabel,
                annotation_id=annotation_id,
                project_id=project_id,
                updated_at=utcnow(),
                **fields,
            )
            s.execute(
                update(Project)
                .where(Project.id == project_id)
                .values(labels_since_refit=func.coalesce(Project.labels_since_refit, 0) + 1)
            )

    def claim_refit(self, project_id: int, every: int) -> bool:
        """Whether at least ``every`` labels were saved since the last refit; if so the
        count starts again, in the same statement, so of several label events arriving at
        once exactly one queues the refit."""
        with self.session() as s:
            claimed = s.execute(
                update(Project)
                .where(
                    Project.id == project_id,
                    func.coalesce(Project.labels_since_refit, 0) >= every,
                )
                .values(labels_since_refit=0)
            )
            return claimed.rowcount == 1

    def delete_human_labels(self, annotation_ids: Sequence[int]) -> int:
        with self.session() as s:
            labels = s.scalars(
                select(HumanLabel).where(HumanLabel.annotation_id.in_(annotation_ids))
            )
            count = 0
            for label in labels:
                label.deleted, label.updated_at, count = True, utcnow(), count + 1
            return count

    def human_labels(self, project_id: int) -> list[HumanLabel]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(HumanLabel).where(
                        HumanLabel.project_id == project_id, HumanLabel.deleted.is_(False)
                    )
                )
            )

    def label_count(self, project_id: int) -> int:
        with self.read() as s:
            return (
                s.scalar(
                    select(func.count()).where(
                        HumanLabel.project_id == project_id, HumanLabel.deleted.is_(False)
                    )
                )
                or 0
            )

    def labelled_comparisons(self, project_id: int) -> list[Labelled]:
        """Every readable task with human labels, as HyPER pairs records (the stored
        comparison, its judge verdict, its human votes oldest first), each with whether its
        decision was an audit and the audit's inclusion probability."""
        with self.read() as s:
            labels = s.execute(
                select(HumanLabel.task_id, HumanLabel.label)
                .where(HumanLabel.project_id == project_id, HumanLabel.deleted.is_(False))
                .order_by(HumanLabel.annotation_id)
            ).all()
            votes: dict[int, list[str]] = {}
            for task_id, label in labels:
                votes.setdefault(task_id, []).append(label)
            rows = s.execute(
                select(
                    TaskRecord.task_id,
                    TaskRecord.comparison,
                    JudgeOutput.verdict,
                    JudgeOutput.verdicts,
                    DecisionRecord.audit,
                    DecisionRecord.inclusion_probability,
                )
                .outerjoin(
                    JudgeOutput,
                    (JudgeOutput.project_id == TaskRecord.project_id)
                    & (JudgeOutput.task_id == TaskRecord.task_id),
                )
                .outerjoin(
                    DecisionRecord,
                    (DecisionRecord.project_id == TaskRecord.project_id)
                    & (DecisionRecord.task_id == TaskRecord.task_id),
                )
                .where(
                    TaskRecord.project_id == project_id,
                    TaskRecord.task_id.in_(list(votes)),
                    TaskRecord.comparison.is_not(None),
                )
            ).all()
            return [
                Labelled(
                    {
                        **comparison,
                        "human": votes[task_id],
                        "judge": verdict,
                        "judges": verdicts or [],
                    },
                    bool(audit),
                    probability,
                )
                for task_id, comparison, verdict, verdicts, audit, probability in rows
            ]

    def seen_comparisons(self, project_id: int) -> list[dict[str, Any]]:
        """Every readable task as a pairs record with its judges' verdicts (if judged)."""
        with self.read() as s:
            rows = s.execute(
                select(TaskRecord.comparison, JudgeOutput.verdict, JudgeOutput.verdicts)
                .outerjoin(
                    JudgeOutput,
                    (JudgeOutput.project_id == TaskRecord.project_id)
                    & (JudgeOutput.task_id == TaskRecord.task_id),
                )
                .where(TaskRecord.project_id == project_id, TaskRecord.comparison.is_not(None))
            ).all()
            return [
                {**comparison, "judge": verdict, "judges": verdicts or []}
                for comparison, verdict, verdicts in rows
            ]

    def route_counts(self, project_id: int) -> dict[str, int]:
        """Decisions by kind (``human`` by the router, ``audit``, ``forced``, ``ai``) and
        the number of tasks received."""
        with self.read() as s:
            rows = s.execute(
                select(
                    DecisionRecord.route, DecisionRecord.audit, DecisionRecord.forced, func.count()
                )
                .where(DecisionRecord.project_id == project_id)
                .group_by(DecisionRecord.route, DecisionRecord.audit, DecisionRecord.forced)
            ).all()
            received = s.scalar(select(func.count()).where(TaskRecord.project_id == project_id))
        counts = {"ai": 0, "human": 0, "audit": 0, "forced": 0, "received": received or 0}
        for route, audit, forced, n in rows:
            human = route is Route.HUMAN
            kind = "audit" if audit else "forced" if forced and human else route.value
            counts[kind] += n
        return counts

    def lm_spend(self, project_id: int) -> dict[str, float]:
        with self.read() as s:
            judged, cost, tokens_in, tokens_out = s.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(JudgeOutput.cost_usd), 0.0),
                    func.coalesce(func.sum(JudgeOutput.input_tokens), 0),
                    func.coalesce(func.sum(JudgeOutput.output_tokens), 0),
                ).where(JudgeOutput.project_id == project_id)
            ).one()
        return {
            "cost_usd": float(cost),
            "input_tokens": int(tokens_in),
            "output_tokens": int(tokens_out),
            "comparisons_judged": int(judged),
        }

    def forced_unreadable(self, project_id: int) -> int:
        """Tasks forced to humans because they could not be read (the other forced tasks
        had no usable judge verdict)."""
        with self.read() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(DecisionRecord)
                    .join(
                        TaskRecord,
                        (TaskRecord.project_id == DecisionRecord.project_id)
                        & (TaskRecord.task_id == DecisionRecord.task_id),
                    )
                    .where(
                        DecisionRecord.project_id == project_id,
                        DecisionRecord.forced.is_(True),
                        TaskRecord.problem.is_not(None),
                    )
                )
                or 0
            )

    def router_versions(self, project_id: int) -> list[RouterVersion]:
        with self.read() as s:
            return list(
                s.scalars(
                    select(RouterVersion)
                    .where(RouterVersion.project_id == project_id)
                    .order_by(RouterVersion.created_at)
                )
            )

    # -- router versions -------------------------------------------------------------------

    def record_router(
        self,
        project_id: int,
        version: str,
        artifact: dict[str, Any],
        quality: dict[str, Any],
        adopt: bool,
    ) -> None:
        """Keep a refitted version with its measured quality; ``adopt`` makes it the project's
        router (earlier versions are kept, inactive). Rejected candidates are kept too, so
        every refit's verdict can be inspected."""
        with self.session() as s:
            _lock_project(s, project_id)  # two processes adopting at once: one active version
            if adopt:
                for previous in s.scalars(
                    select(RouterVersion).where(RouterVersion.project_id == project_id)
                ):
                    previous.active = False
            _upsert(
                s,
                RouterVersion,
                project_id=project_id,
                version=version,
                artifact=artifact,
                quality=quality,
                active=adopt,
                adopted=adopt,
            )

    def begin_refit(self, project_id: int) -> None:
        """A refit is about to read the labels: count new ones from here."""
        with self.session() as s:
            s.execute(update(Project).where(Project.id == project_id).values(labels_since_refit=0))

    def record_refit(
        self,
        project_id: int,
        n_labels: int,
        candidate: str | None,
        adopted: bool,
        in_use: str,
        in_use_auc: float | None,
        reason: str,
    ) -> None:
        with self.session() as s:
            s.add(
                RefitRecord(
                    project_id=project_id,
                    n_labels=n_labels,
                    candidate=candidate,
                    adopted=adopted,
                    in_use=in_use,
                    in_use_auc=in_use_auc,
                    reason=reason,
                )
            )

    def record_certification(self, record: CertificationRecord) -> CertificationRecord:
        with self.session() as s:
            s.add(record)
            s.flush()
            s.expunge(record)
        return record

    def certifications(self, project_id: int) -> list[CertificationRecord]:
        """The project's certification looks, oldest first."""
        with self.read() as s:
            return list(
                s.scalars(
                    select(CertificationRecord)
                    .where(CertificationRecord.project_id == project_id)
                    .order_by(CertificationRecord.id)
                )
            )

    def refits(self, project_id: int) -> list[RefitRecord]:
        """The project's refits, oldest first."""
        with self.read() as s:
            return list(
                s.scalars(
                    select(RefitRecord)
                    .where(RefitRecord.project_id == project_id)
                    .order_by(RefitRecord.id)
                )
            )

    def active_router(self, project_id: int) -> RouterVersion | None:
        with self.read() as s:
            return s.scalar(
                select(RouterVersion).where(
                    RouterVersion.project_id == project_id, RouterVersion.active.is_(True)
                )
            )

    # -- tagger cache (the lm layer's TagCache protocol) -----------------------------------

    def get(self, key: str) -> dict[str, str] | None:
        with self.read() as s:
            entry = s.get(TagCacheEntry, key)
            return dict(entry.tags) if entry else None

    def put(self, key: str, tags: dict[str, str]) -> None:
        with self.session() as s:
            _upsert(s, TagCacheEntry, key=key, tags=tags)
