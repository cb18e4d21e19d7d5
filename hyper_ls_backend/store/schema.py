"""Database tables (SQLAlchemy 2.0). SQLite in MODEL_DIR by default; any SQLAlchemy URL works.

The imports webhooks delivered, until their tasks are recorded (`received_imports`), a
row per Label Studio task imported (`tasks`), its judge output (`judge_outputs`), the
one routing decision it will ever get (`decisions`, primary key = project + task, so a
task cannot be routed twice; the core's ``Decision`` as given, enums stored as their string
values), human labels (`human_labels`), router versions per project
(`router_versions`), every refit's verdict (`refits`), every certification of a quality
target (`certifications`), the Message Batches the judge's calls went in
(`judge_batches`, and their requests: `judge_batch_items`) and the tagger's cache
(`tag_cache`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.core.guarantee import Certificate
from hyper_ls_backend.core.policy import Decision, Route


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_string(enum: type[Route] | type[Label]) -> Enum:
    """An enum column that is a plain VARCHAR of the values (``human``, ``tie``), as the
    column was before it was typed: existing databases read and write it unchanged."""
    return Enum(enum, native_enum=False, length=8, values_callable=lambda e: [m.value for m in e])


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label_config: Mapped[str] = mapped_column(Text, default="")
    extra_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    labels_since_refit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Human labels saved (created or changed) since the last refit began: the refit
    trigger. A count rather than the number of labels, which deletions lower and bulk
    arrivals step over. None (a database made by an earlier version) reads as 0."""


class ReceivedImport(Base):
    """A ``TASKS_CREATED`` webhook's import, stored as it came while the webhook waited for
    its answer, until its tasks are recorded (``Store.record_received``)."""

    __tablename__ = "received_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    """In order of arrival: imports are recorded, and numbered, in this order."""
    project_id: Mapped[int] = mapped_column(Integer)
    tasks: Mapped[list[Any]] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TaskRecord(Base):
    """A task as received on import: its raw payload, and the comparison read from it."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_import", "project_id", "import_batch"),)
    """An import's tasks are read and counted by ``(project, import)`` on every chunk."""

    project_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payload: Mapped[dict[str, Any]] = mapped_column()
    comparison: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    problem: Mapped[str | None] = mapped_column(Text, nullable=True)
    import_batch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The import (one ``TASKS_CREATED`` webhook's new tasks, numbered per project) the task
    came in; its tasks are decided together. None for tasks stored before imports were
    recorded: each is decided on its own."""
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JudgeOutput(Base):
    __tablename__ = "judge_outputs"

    project_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    verdict: Mapped[dict[str, Any]] = mapped_column()
    """The primary judge's verdict."""
    verdicts: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    """Every judge's verdict, the primary's first (None: stored by an earlier version, one
    judge)."""
    calls: Mapped[list[Any]] = mapped_column()
    """Every call to every judge, each naming its judge (``judge``)."""
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DecisionRecord(Base):
    """The routing decision for a task. Written once; ``written_at`` records the write-back."""

    __tablename__ = "decisions"

    project_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer)
    """Order of decisions within the project: the budget ledger counts along it."""
    route: Mapped[Route] = mapped_column(as_string(Route))
    score: Mapped[float] = mapped_column(Float)
    reasons: Mapped[list[Any]] = mapped_column()
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    audit: Mapped[bool] = mapped_column(Boolean, default=False)
    """Sent to humans at random from what the judge would have labelled, to measure it."""
    inclusion_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    """An audit's probability of having been drawn (1 for other decisions); None for
    decisions made before it was recorded."""
    judge_label: Mapped[Label | None] = mapped_column(as_string(Label), nullable=True)
    judge_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    written_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    prediction_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    annotation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    settled: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    """Decided before the rest of its import was judged (``CampaignPolicy.settle``); None
    for decisions made before it was recorded."""

    @classmethod
    def of(cls, project_id: int, task_id: int, sequence: int, decision: Decision) -> DecisionRecord:
        return cls(
            project_id=project_id,
            task_id=task_id,
            sequence=sequence,
            route=decision.route,
            score=decision.score,
            reasons=list(decision.reasons),
            forced=decision.forced,
            audit=decision.audit,
            inclusion_probability=decision.inclusion_probability,
            judge_label=decision.judge_label,
            judge_confidence=decision.judge_confidence,
            model_version=decision.model_version,
            settled=decision.settled,
        )

    def decision(self) -> Decision:
        """The core's ``Decision`` this row stores (an inclusion probability not recorded,
        by an earlier version, reads as 1)."""
        return Decision(
            id=str(self.task_id),
            route=self.route,
            score=self.score,
            reasons=list(self.reasons),
            forced=self.forced,
            audit=self.audit,
            inclusion_probability=(
                1.0 if self.inclusion_probability is None else self.inclusion_probability
            ),
            judge_label=self.judge_label,
            judge_confidence=self.judge_confidence,
            model_version=self.model_version,
            settled=bool(self.settled),
        )


class HumanLabel(Base):
    __tablename__ = "human_labels"

    annotation_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    task_id: Mapped[int] = mapped_column(Integer, index=True)
    label: Mapped[str] = mapped_column(String(8))
    choice: Mapped[str] = mapped_column(String(64))
    strength: Mapped[str | None] = mapped_column(String(8), nullable=True)
    annotator: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RouterVersion(Base):
    __tablename__ = "router_versions"

    project_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    artifact: Mapped[dict[str, Any]] = mapped_column()
    quality: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    """The version the project routes with now (at most one per project)."""
    adopted: Mapped[bool] = mapped_column(Boolean, default=False)
    """Passed its adoption test when proposed; False for a rejected candidate."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RefitRecord(Base):
    """One refit's verdict, recorded also when it proposed no version (too few labels):
    what ``/status`` says of the last training and of each version."""

    __tablename__ = "refits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    n_labels: Mapped[int] = mapped_column(Integer)
    candidate: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """The version proposed and measured; None when there was too little to propose one."""
    adopted: Mapped[bool] = mapped_column(Boolean)
    in_use: Mapped[str] = mapped_column(String(128))
    """The version routing after the refit: the candidate if adopted, else the one kept."""
    in_use_auc: Mapped[float | None] = mapped_column(Float, nullable=True)
    """How well ``in_use`` ranked the judge's errors on the campaign's labels, as this
    refit measured it (0.5 is chance); None when not measured."""
    reason: Mapped[str] = mapped_column(Text)
    """Why the candidate was or was not adopted, in plain words."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CertificationRecord(Base):
    """One look at a project's audits for its quality target (docs/guarantee.md): the
    threshold it certified, or why none; kept so a restart routes by the same certificate
    and the next look spends the right share of the confidence."""

    __tablename__ = "certifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    look: Mapped[int] = mapped_column(Integer)
    """1 for the project's first certification, 2 for the next...: look ``k`` tests at
    ``delta x 6 / (pi^2 k^2)``, so all looks together spend ``delta`` once."""
    router_version: Mapped[str] = mapped_column(String(128))
    target_agreement: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    """The campaign's confidence (the project's setting), not this look's share of it."""
    delta: Mapped[float] = mapped_column(Float)
    n_calibration: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    """None when nothing was certified."""
    lower_bound: Mapped[float | None] = mapped_column(Float, nullable=True)
    agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    coverage: Mapped[float | None] = mapped_column(Float, nullable=True)
    """The calibration's share under the threshold: about the share the judge may label."""
    curve: Mapped[list[Any]] = mapped_column(default=list)
    """Every threshold tried: ``{threshold, n, coverage, agreement, lower_bound, passed}``."""
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def certificate(self, router_version: str) -> Certificate | None:
        """What this look certifies for the router ``router_version``: None when it
        certified nothing, or was made for another router (whose scores are on another
        scale)."""
        if self.threshold is None or self.router_version != router_version:
            return None
        return Certificate(
            threshold=self.threshold,
            target_agreement=self.target_agreement,
            confidence=self.confidence,
            n_calibration=self.n_calibration,
            lower_bound=self.lower_bound or 0.0,
        )


class JudgeBatchRecord(Base):
    """One Message Batch of one judge's calls on one import (``jobs/batches.py``): claimed
    (``submitting``) before it is sent, so it is sent once; its API id once accepted
    (``in_progress``); ``done`` once its results are stored, ``gone`` when the API lost it,
    ``refused`` when the API would not take it (its tasks are judged one by one)."""

    __tablename__ = "judge_batches"
    __table_args__ = (UniqueConstraint("project_id", "import_batch", "judge", "part"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    import_batch: Mapped[int] = mapped_column(Integer)
    judge: Mapped[int] = mapped_column(Integer)
    """The judge's place in the panel (0: the primary)."""
    part: Mapped[int] = mapped_column(Integer)
    """0, 1, ...: an import too big for one batch is sent in several."""
    model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    batch_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    requests: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JudgeBatchItem(Base):
    """One request of a Message Batch: one order of one task for one judge. ``outcome`` is
    None until the batch's results are read; ``call`` is the judge's answer when it
    succeeded (``lm.JudgeCall``, at the batch price)."""

    __tablename__ = "judge_batch_items"

    batch: Mapped[int] = mapped_column(Integer, primary_key=True)
    """``JudgeBatchRecord.id``."""
    custom_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[int] = mapped_column(Integer, index=True)
    task_id: Mapped[int] = mapped_column(Integer, index=True)
    judge: Mapped[int] = mapped_column(Integer)
    swapped: Mapped[bool] = mapped_column(Boolean)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    call: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    """What the batch charged for it (half the listed price)."""
    list_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    """What the same tokens cost at the listed price."""


class TagCacheEntry(Base):
    __tablename__ = "tag_cache"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    tags: Mapped[dict[str, Any]] = mapped_column()
