"""Label Studio's ML backend wire protocol (as LS 1.23 speaks it), as pydantic models.

Only what the backend reads is required; everything else LS sends is kept (``extra``) so a
newer Label Studio that adds fields still gets answers.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


MAX_ID = 2**53 - 1
"""Largest id taken: exact in JSON numbers everywhere, and far beyond Label Studio's ids."""
DbId = Annotated[int, Field(ge=0, le=MAX_ID)]
ProjectRef = Annotated[
    str,
    Field(pattern=r"^[0-9]{1,18}(\.[0-9]+)?$", description='"<project id>.<created timestamp>"'),
]
"""How Label Studio names a project to its ML backend (``ml/api_connector.py``)."""


def project_id_of(ref: int | str) -> int:
    return int(str(ref).split(".", 1)[0])


class SetupRequest(Loose):
    project: ProjectRef
    schema_: str = Field(alias="schema", description="the project's label config XML")
    hostname: str | None = None
    access_token: str | None = None
    model_version: str | None = None
    extra_params: dict[str, Any] | str | None = None

    @property
    def project_id(self) -> int:
        return project_id_of(self.project)


class SetupResponse(BaseModel):
    model_version: str


class Task(Loose):
    id: DbId
    data: dict[str, Any]


class PredictRequest(Loose):
    tasks: list[Task]
    project: DbId | ProjectRef
    label_config: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def project_id(self) -> int:
        return project_id_of(self.project)


class PredictionOut(BaseModel):
    result: list[dict[str, Any]]
    score: float
    model_version: str


class PredictResponse(BaseModel):
    results: list[PredictionOut | list[PredictionOut]]
    """One entry per task, in order: its prediction, or a list of predictions. Label Studio
    stores each prediction of a list, and nothing for an empty one (``ml/models.py``), which
    is how a task with nothing to pre-fill is answered."""


class WebhookProject(Loose):
    id: DbId
    label_config: str | None = None


class Ref(Loose):
    id: DbId


class WebhookAnnotation(Ref):
    task: DbId | None = None
    result: list[dict[str, Any]] = Field(default_factory=list)
    was_cancelled: bool | None = False
    parent_prediction: DbId | None = None
    completed_by: DbId | dict[str, Any] | None = None


class WebhookEvent(Loose):
    """What Label Studio posts for a project event. ``tasks`` stay free-form: a task that
    cannot be read is routed to humans with its reason, not refused with the whole batch."""

    action: str
    project: WebhookProject | None = None
    tasks: list[dict[str, Any]] = Field(default_factory=list)
    annotation: WebhookAnnotation | None = None
    annotations: list[Ref] = Field(default_factory=list)
    task: Ref | None = None

    @model_validator(mode="before")
    @classmethod
    def _bulk_annotations(cls, data: Any) -> Any:
        """Label Studio 1.23 posts ``ANNOTATIONS_CREATED`` (made in bulk by a Data Manager
        action, the judge's write-back among them) with a list under ``annotation`` and
        their tasks, a list too, under ``task`` (``webhooks/models.py``: both ``many``)."""
        if isinstance(data, dict) and isinstance(data.get("annotation"), list):
            data = {**data, "annotations": data["annotation"], "annotation": None}
        if isinstance(data, dict) and isinstance(data.get("task"), list):
            data = {**data, "tasks": data["task"], "task": None}
        return data


class Problem(BaseModel):
    """Every error answer: a message, or FastAPI's list of what failed validation where."""

    detail: str | list[dict[str, Any]]


class HealthResponse(BaseModel):
    status: str
    model_class: str
    judge: str
    queue: str
    pending_jobs: int
    received_imports: int = Field(
        description="imports a webhook delivered that are not yet recorded and enqueued"
    )
    notes: list[str]
