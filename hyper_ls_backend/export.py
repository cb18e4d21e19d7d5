"""The campaign's preference dataset: what ``hyper-ls export`` and ``GET /export`` write.

A wiring-layer module (like ``server`` and ``cli``): it reads both Label Studio and the
backend's store, and ``core`` never imports it.

Label Studio is read for what people see and change there: each task's current data (an
edit made after import is exported, not the copy the backend received) and its current
annotations. Human labels are taken from those annotations rather than from the store's
``human_labels``, because the store misses labels made while the backend was down (their
webhook is lost) and never records a person's edit of the judge's own pre-filled annotation
(the backend ignores events on its own annotations). The store gives what only the backend
knows: the routing decision (route, audit, router version), every judge's verdict, and the
tags the tagger added at import.

The final label of a task, in order:

1. the human votes on it, if any (majority; a split vote is a tie, as
   ``Comparison.reference_label`` reads it). A person who changed the answer of the
   judge's pre-filled annotation, or added an annotation beside it, casts a human vote
   (see ``human_votes``). The source is ``audit`` when the task's decision was an audit,
   else ``human``;
2. else the judges' label when the task was routed to the judge and, in ``annotate`` mode,
   its pre-filled annotation is still in Label Studio (deleting it rejects the label);
   source ``judge``;
3. else none yet (``label`` null): not routed, waiting for a human, or the judge's
   annotation was deleted.

A task whose current data the project's label config cannot read into a comparison (no
prompt, say) cannot be a pairs row: it is left out of both formats and counted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import make_url, select

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.dataset import write_jsonl
from hyper_ls_backend.core.policy import Route
from hyper_ls_backend.jobs.pipeline import verdicts_of
from hyper_ls_backend.ls.label_config import (
    LabelConfigError,
    PreferenceConfig,
    parse_label_config,
    task_to_comparison,
)
from hyper_ls_backend.store import Store
from hyper_ls_backend.store.schema import DecisionRecord, JudgeOutput, TaskRecord

PAGE_SIZE = 100
"""Tasks asked of Label Studio per request (the SDK's pager fetches page after page)."""


class ExportError(ValueError):
    """The export cannot be made; the message says why and what to set."""


class ExportFormat(StrEnum):
    PAIRS = "pairs"
    """The HyPER pairs format (``hyper-ls fit``/``route`` read it) plus provenance fields."""
    TRL = "trl"
    """TRL's standard preference format with an explicit prompt: ``prompt``, ``chosen``,
    ``rejected`` strings, what its ``DPOTrainer`` and ``RewardTrainer`` read."""


class Source(StrEnum):
    """Who gave a task its final label."""

    HUMAN = "human"
    JUDGE = "judge"
    AUDIT = "audit"
    """A human label on a task the campaign audited (drawn at random from the tasks the
    judge would have labelled): it also measures the judge."""


class HumanVote(BaseModel):
    """One person's answer on a task, as Label Studio holds it now."""

    model_config = ConfigDict(frozen=True)

    annotation_id: int
    label: Label
    choice: str
    """The answer as the project's ``<Choices>`` stores it (``B-is-slightly-better``)."""
    annotator_id: int | None
    annotator_email: str | None
    edited_prefill: bool = False
    """The vote is a person's edit of the judge's pre-filled annotation."""


class ExportRow(Comparison):
    """One task of the campaign: a pairs-format comparison (``human`` holds the human votes'
    labels, ``judge``/``judges`` every judge's verdict) with where its label came from.
    ``read_comparisons`` reads it back and ignores the provenance fields."""

    label: Label | None = None
    """The final label (see the module's docstring); None while the task has none."""
    source: Source | None = None
    votes: list[HumanVote] = Field(default_factory=list)
    route: Route | None = None
    """The backend's decision; None for a task it has not routed (yet)."""
    audit: bool = False
    ai_label: Label | None = None
    """The judges' label the decision saw (what an AI-routed task is pre-filled with)."""
    ai_confidence: float | None = None
    router_version: str | None = None
    """The router version that decided the task."""
    score: float | None = None
    """The router's score when it decided (``hyper_score``, to full precision)."""
    reasons: list[str] = Field(default_factory=list)
    """Why it was routed so, with the figures ``hyper_reason`` leaves out."""


class TrlRow(BaseModel):
    """A row of TRL's standard preference format (explicit prompt)."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    chosen: str
    rejected: str


class ExportSummary(BaseModel):
    """What an export holds and what it left out, counted."""

    project: int
    format: ExportFormat
    tasks: int
    """Tasks of the project in Label Studio."""
    written: int
    """Rows in the file."""
    human: int
    audit: int
    judge: int
    unlabelled: int
    """Readable tasks without a final label (pairs: exported with ``label`` null)."""
    unreadable: int
    """Tasks the label config cannot read into a comparison: in neither format."""
    ties: int = 0
    """``trl``: tasks whose final label is a tie, left out (a tie has no chosen side)."""
    multi_turn: int = 0
    """``trl``: tasks with earlier turns (``context``), left out: the standard format has
    one prompt string and no turns. ``pairs`` keeps them."""

    def describe(self) -> str:
        text = (
            f"project {self.project}: {self.tasks} tasks, {self.written} rows ({self.format}); "
            f"labelled by human {self.human}, audit {self.audit}, judge {self.judge}; "
            f"no label yet {self.unlabelled}"
        )
        if self.format is ExportFormat.TRL:
            text += (
                f" (left out, as are {self.ties} ties and {self.multi_turn} multi-turn "
                "comparisons: use --format pairs to keep them)"
            )
        if self.unreadable:
            text += f"; {self.unreadable} tasks unreadable by the label config, left out"
        return text


@dataclass(frozen=True)
class StoredProject:
    """What the backend's store holds on a project's tasks, by task id."""

    decisions: Mapping[int, DecisionRecord]
    judge_outputs: Mapping[int, JudgeOutput]
    tasks: Mapping[int, TaskRecord]

    @classmethod
    def read(cls, store: Store, project_id: int) -> StoredProject:
        if store.project(project_id) is None:
            raise ExportError(
                f"project {project_id} is not in the backend's store: was the backend "
                "connected to it, and do MODEL_DIR / DATABASE_URL point where it keeps its state?"
            )
        with store.session() as s:
            decisions = s.scalars(select(DecisionRecord).filter_by(project_id=project_id))
            outputs = s.scalars(select(JudgeOutput).filter_by(project_id=project_id))
            tasks = s.scalars(select(TaskRecord).filter_by(project_id=project_id))
            return cls(
                decisions={d.task_id: d for d in decisions},
                judge_outputs={o.task_id: o for o in outputs},
                tasks={t.task_id: t for t in tasks},
            )


@dataclass(frozen=True)
class Export:
    project: int
    rows: list[ExportRow]
    unreadable: dict[int, str]
    """Task id -> why its data is not a comparison."""

    def trl(self) -> list[TrlRow]:
        return [trl for row in self.rows if (trl := trl_row(row)) is not None]

    def records(self, fmt: ExportFormat) -> list[dict[str, Any]]:
        """The file's rows as JSON objects."""
        if fmt is ExportFormat.PAIRS:
            return [row.model_dump(mode="json") for row in self.rows]
        return [row.model_dump() for row in self.trl()]

    def summary(self, fmt: ExportFormat) -> ExportSummary:
        sources = [row.source for row in self.rows]
        trl = fmt is ExportFormat.TRL
        return ExportSummary(
            project=self.project,
            format=fmt,
            tasks=len(self.rows) + len(self.unreadable),
            written=len(self.trl()) if trl else len(self.rows),
            human=sources.count(Source.HUMAN),
            audit=sources.count(Source.AUDIT),
            judge=sources.count(Source.JUDGE),
            unlabelled=sources.count(None),
            unreadable=len(self.unreadable),
            ties=sum(row.label is Label.TIE for row in self.rows) if trl else 0,
            multi_turn=(
                sum(row.label in (Label.A, Label.B) and is_multi_turn(row) for row in self.rows)
                if trl
                else 0
            ),
        )

    def jsonl(self, fmt: ExportFormat) -> str:
        """The file's text, JSON Lines (as ``write`` writes it)."""
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records(fmt))

    def write(self, path: Path, fmt: ExportFormat) -> ExportSummary:
        write_jsonl(path, self.records(fmt))
        return self.summary(fmt)


def is_multi_turn(row: Comparison) -> bool:
    return bool(row.context_a or row.context_b)


def trl_row(row: ExportRow) -> TrlRow | None:
    """The row as TRL reads it; None for a task without a side chosen (no label, a tie)
    or with earlier turns."""
    if row.label not in (Label.A, Label.B) or is_multi_turn(row):
        return None
    a, b = row.response_a, row.response_b
    chosen, rejected = (a, b) if row.label is Label.A else (b, a)
    return TrlRow(prompt=row.prompt, chosen=chosen, rejected=rejected)


# -- building rows ------------------------------------------------------------------------


def build_export(
    project_id: int,
    tasks: Sequence[Mapping[str, Any]],
    config: PreferenceConfig,
    stored: StoredProject,
    emails: Mapping[int, str],
) -> Export:
    """The export of Label Studio's ``tasks`` (dicts as its API returns them, with their
    annotations), read with ``config``, with what ``stored`` knows of them; ``emails``
    names Label Studio's users by id."""
    rows, unreadable = [], {}
    for task in sorted(tasks, key=lambda t: int(t["id"])):
        task_id = int(task["id"])
        try:
            comparison = task_to_comparison(task, config)
        except ValueError as error:
            unreadable[task_id] = str(error)
            continue
        rows.append(build_row(comparison, task, config, stored, emails))
    return Export(project_id, rows, unreadable)


def build_row(
    comparison: Comparison,
    task: Mapping[str, Any],
    config: PreferenceConfig,
    stored: StoredProject,
    emails: Mapping[int, str],
) -> ExportRow:
    task_id = int(task["id"])
    record, output = stored.tasks.get(task_id), stored.judge_outputs.get(task_id)
    decision = stored.decisions.get(task_id)
    if record is not None and record.comparison is not None:
        # The tagger's tags live in the stored copy; the task's own data.tags win.
        tagged = record.comparison.get("tags") or {}
        comparison = comparison.with_tags({**tagged, **comparison.tags})
    if output is not None:
        comparison = comparison.with_panel(verdicts_of(output))
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    votes = human_votes(task, annotations, decision, config, emails)
    row = ExportRow.model_validate(
        {
            **comparison.model_dump(),
            "human": [vote.label for vote in votes],
            "votes": votes,
            "route": decision.route if decision else None,
            "audit": bool(decision and decision.audit),
            "ai_label": decision.judge_label if decision else None,
            "ai_confidence": decision.judge_confidence if decision else None,
            "router_version": decision.model_version if decision else None,
            "score": decision.score if decision else None,
            "reasons": list(decision.reasons) if decision else [],
        }
    )
    if votes:
        source = Source.AUDIT if row.audit else Source.HUMAN
        return row.model_copy(update={"label": row.reference_label, "source": source})
    if judge_label_stands(decision, annotations):
        return row.model_copy(update={"label": decision.judge_label, "source": Source.JUDGE})
    return row


def judge_label_stands(decision: DecisionRecord | None, annotations: Sequence[Mapping]) -> bool:
    """Whether an AI-routed task keeps the judges' label: it has one, and its pre-filled
    annotation (in ``annotate`` mode) was not deleted in Label Studio."""
    if decision is None or decision.route is not Route.AI or decision.judge_label is None:
        return False
    if decision.annotation_id is None:  # predict mode: a prediction only
        return True
    return any(a.get("id") == decision.annotation_id for a in annotations)


def human_votes(
    task: Mapping[str, Any],
    annotations: Sequence[Mapping[str, Any]],
    decision: DecisionRecord | None,
    config: PreferenceConfig,
    emails: Mapping[int, str],
) -> list[HumanVote]:
    """The people's answers among a task's annotations, oldest first.

    The backend's own pre-filled annotation is a vote only once its answer was changed (a
    person corrected the judge in place), credited to ``updated_by``, whoever saved it
    last. Who made or saved the pre-fill cannot tell: it is credited to the judge's own
    user but saved by the account whose key the backend uses, which a person may share. So
    the answer is compared with the backend's prediction (the choice it pre-filled), or with
    the judges' label when that prediction is gone. A pre-fill re-submitted unchanged keeps
    the judges' label.
    """
    prefilled = None
    if decision is not None and decision.prediction_id is not None:
        predictions = task.get("predictions") or []
        prefilled = next(
            (
                config.read_answer(p.get("result") or [])
                for p in predictions
                if p.get("id") == decision.prediction_id
            ),
            None,
        )
    votes = []
    for annotation in sorted(annotations, key=lambda a: int(a["id"])):
        answer = config.read_answer(annotation.get("result") or [])
        if answer is None:
            continue
        author = user_id(annotation.get("completed_by"))
        prefill = decision is not None and annotation["id"] == decision.annotation_id
        if prefill:
            unchanged = (
                answer.choice == prefilled.choice
                if prefilled is not None
                else answer.label == decision.judge_label
            )
            if unchanged:
                continue
            author = user_id(annotation.get("updated_by")) or author
        votes.append(
            HumanVote(
                annotation_id=int(annotation["id"]),
                label=answer.label,
                choice=answer.choice,
                annotator_id=author,
                annotator_email=emails.get(author) if author is not None else None,
                edited_prefill=prefill,
            )
        )
    return votes


def user_id(user: Any) -> int | None:
    """Label Studio sends a user as an id, or as an object with an ``id``."""
    if isinstance(user, Mapping):
        user = user.get("id")
    return int(user) if user is not None else None


# -- reading Label Studio and the store ----------------------------------------------------


@dataclass(frozen=True)
class LabelStudioProject:
    label_config: str
    tasks: list[dict[str, Any]]
    emails: dict[int, str]


def read_label_studio(
    client: LabelStudio, project_id: int, page_size: int = PAGE_SIZE
) -> LabelStudioProject:
    """The project's label config, every task with its annotations (page by page) and the
    e-mail of every user, as plain dicts."""
    try:
        project = client.projects.get(id=project_id)
        tasks = [
            task.model_dump(mode="json")
            for task in client.tasks.list(project=project_id, fields="all", page_size=page_size)
        ]
        emails = {int(u.id): u.email for u in client.users.list() if u.id is not None and u.email}
    except ApiError as error:
        if error.status_code == 404:
            raise ExportError(f"Label Studio has no project {project_id}") from None
        if error.status_code in (401, 403):
            raise ExportError(
                f"Label Studio refused the API key ({error.status_code}): check "
                "LABEL_STUDIO_API_KEY"
            ) from None
        raise ExportError(f"Label Studio answered {error.status_code}: {error.body}") from None
    except httpx.HTTPError as error:
        raise ExportError(f"cannot reach Label Studio: {error}") from None
    return LabelStudioProject(project.label_config or "", tasks, emails)


def export_project(
    client: LabelStudio, store: Store, project_id: int, page_size: int = PAGE_SIZE
) -> Export:
    """Read the project from Label Studio and the store, and build its export."""
    stored = StoredProject.read(store, project_id)
    project = read_label_studio(client, project_id, page_size)
    try:
        config = parse_label_config(project.label_config)
    except LabelConfigError as error:
        raise ExportError(f"project {project_id}: {error}") from None
    return build_export(project_id, project.tasks, config, stored, project.emails)


def open_store(url: str) -> Store:
    """The backend's store at ``url``; a SQLite file that does not exist is an error, not a
    new empty store (the export was run away from the backend's MODEL_DIR)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        path = Path(parsed.database)
        if not path.exists():
            raise ExportError(
                f"no backend state at {path}: run the export with the MODEL_DIR (or "
                "DATABASE_URL) the backend uses"
            )
    return Store(url)
