"""Label Studio's ML backend wire protocol (as LS 1.23 speaks it), as pydantic models.

Only what the backend reads is required; everything else LS sends is kept (``extra``) so a
newer Label Studio that adds fields still gets answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class SetupRequest(Loose):
    project: str = Field(description='"<project id>.<created timestamp>"')
    schema_: str = Field(alias="schema", description="the project's label config XML")
    hostname: str | None = None
    access_token: str | None = None
    model_version: str | None = None
    extra_params: dict[str, Any] | str | None = None

    @property
    def project_id(self) -> int:
        return int(self.project.split(".", 1)[0])


class SetupResponse(BaseModel):
    model_version: str


class Task(Loose):
    id: int
    data: dict[str, Any]


class PredictRequest(Loose):
    tasks: list[Task]
    project: str | int | None = None
    label_config: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class PredictionOut(BaseModel):
    result: list[dict[str, Any]]
    score: float
    model_version: str


class PredictResponse(BaseModel):
    results: list[PredictionOut]


class WebhookProject(Loose):
    id: int
    label_config: str | None = None


class WebhookEvent(Loose):
    action: str
    project: WebhookProject | None = None
    tasks: list[dict[str, Any]] = Field(default_factory=list)
    annotation: dict[str, Any] | None = None
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    task: dict[str, Any] | None = None


class HealthResponse(BaseModel):
    status: str
    model_class: str
    judge: str
    queue: str
    pending_jobs: int
    notes: list[str]
