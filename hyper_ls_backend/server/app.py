"""The HTTP face of the backend: Label Studio's ML backend protocol over FastAPI.

Every handler is a thin shell over ``HyperModel``. ``/setup`` only parses and stores (LS
gives it 3 s); ``/webhook`` only stores (an import as it came: ``server/inbox.py``) and
enqueues (LS gives it 1 s).
"""

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from urllib.parse import quote_plus

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hyper_ls_backend.export import ExportError, ExportFormat, export_project
from hyper_ls_backend.ls.label_config import LabelConfigError
from hyper_ls_backend.server import dashboard, metrics
from hyper_ls_backend.server.model import HyperModel, start_up_objects_frozen
from hyper_ls_backend.server.schemas import (
    MAX_ID,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    Problem,
    SetupRequest,
    SetupResponse,
    WebhookEvent,
)
from hyper_ls_backend.server.status import ProjectStatus, project_status
from hyper_ls_backend.settings import Settings

log = logging.getLogger(__name__)
MODEL_CLASS = "HyperRouter"


# No ``from __future__ import annotations`` here: FastAPI reads these annotations at runtime.


async def current_model(request: Request) -> HyperModel:
    """Async, so FastAPI runs it on the event loop, not on a trip to its threadpool."""
    return request.app.state.model


Backend = Annotated[HyperModel, Depends(current_model)]
ProjectId = Annotated[int, Query(ge=0, le=MAX_ID, description="the Label Studio project id")]


def basic_auth_guard(user: str, password: str):
    """Reject requests without these basic-auth credentials."""
    security = HTTPBasic(auto_error=False)

    def check(credentials: Annotated[HTTPBasicCredentials | None, Depends(security)]) -> None:
        valid = credentials is not None and (
            secrets.compare_digest(credentials.username.encode(), user.encode())
            & secrets.compare_digest(credentials.password.encode(), password.encode())
        )
        if not valid:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "basic auth credentials missing or wrong",
                headers={"WWW-Authenticate": "Basic"},
            )

    return check


def create_app(settings: Settings, model: HyperModel | None = None) -> FastAPI:
    """The ASGI app. ``model`` is built from ``settings`` at start-up unless given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.model = model or HyperModel.build(settings)
        app.state.model.start()
        with start_up_objects_frozen():
            yield
        app.state.model.stop()

    password = settings.basic_auth_pass.get_secret_value() if settings.basic_auth_pass else ""
    app = FastAPI(
        title="hyper-ls-backend",
        description="Routes preference comparisons to an LM judge or to human annotators.",
        lifespan=lifespan,
        # Only a guarded app documents basic auth, so the OpenAPI schema says what is needed.
        dependencies=(
            [Depends(basic_auth_guard(settings.basic_auth_user, password))]
            if settings.basic_auth_user
            else []
        ),
        responses={
            status.HTTP_401_UNAUTHORIZED: {"model": Problem, "description": "basic auth needed"},
            status.HTTP_422_UNPROCESSABLE_CONTENT: {
                "model": Problem,
                "description": "a payload that does not fit the schema, or a label config or "
                "extra params the backend cannot use",
            },
        },
    )

    @app.get("/health", response_model=HealthResponse)
    def health(model: Backend) -> HealthResponse:
        judge = model.pipeline.judge
        return HealthResponse(
            status="UP",
            model_class=MODEL_CLASS,
            judge=judge.model if judge else "none",
            queue="redis" if settings.redis_url else "sqlite",
            pending_jobs=model.queue.pending(),
            received_imports=model.store.received_count(),
            notes=model.notes(),
        )

    @app.post(
        "/setup",
        response_model=SetupResponse,
        responses={
            status.HTTP_303_SEE_OTHER: {
                "model": Problem,
                "description": "a label config or extra params the backend cannot use: the "
                "body names what is missing; Location answers 422 with the same reason, "
                "which is how Label Studio shows it (see refusal_url)",
            }
        },
    )
    def setup(request: SetupRequest, model: Backend) -> Response:
        try:
            version = model.setup(request.project_id, request.schema_, request.extra_params)
        except (LabelConfigError, ValueError) as error:
            log.warning("/setup of project %d refused: %s", request.project_id, error)
            return JSONResponse(
                Problem(detail=str(error)).model_dump(),
                status.HTTP_303_SEE_OTHER,
                headers={"Location": refusal_url(str(error))},
            )
        return JSONResponse(SetupResponse(model_version=version).model_dump())

    @app.get(REFUSED_PATH, include_in_schema=False)
    def setup_refused(reason: str = "") -> Response:
        return JSONResponse(
            Problem(detail=reason).model_dump(), status.HTTP_422_UNPROCESSABLE_CONTENT
        )

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses={status.HTTP_409_CONFLICT: {"model": Problem, "description": "unknown project"}},
    )
    async def predict(request: PredictRequest, model: Backend) -> PredictResponse:
        project_id = request.project_id
        if model.store.project(project_id) is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"project {project_id} was never set up: connect the backend in the project's "
                "Model settings first",
            )
        tasks = [task.model_dump() for task in request.tasks]
        results = await run_in_threadpool(model.predict, project_id, tasks)
        return PredictResponse(results=results)

    @app.post("/webhook")
    async def webhook(event: WebhookEvent, model: Backend) -> dict[str, str]:
        # An import waits for its write on the loop; anything else takes one trip to the
        # threadpool (a sync handler would make FastAPI take one more for the answer).
        metrics.WEBHOOKS.labels(event.action).inc()
        if (receipt := model.receive_import(event)) is not None:
            await asyncio.wrap_future(receipt.stored)
            return {"status": receipt.status}
        return {"status": await run_in_threadpool(answer_webhook, model, event)}

    def campaign(project: int, model: HyperModel) -> ProjectStatus:
        stored = model.store.project(project)
        if stored is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"project {project} was never set up")
        return project_status(
            model.store,
            settings.for_project(stored.extra_params),
            project,
            model.pipeline.routers.for_project(project),
        )

    unknown_project = {
        status.HTTP_404_NOT_FOUND: {"model": Problem, "description": "unknown project"}
    }

    @app.get("/status", response_model=ProjectStatus, responses=unknown_project)
    def status_of(project: ProjectId, model: Backend) -> ProjectStatus:
        return campaign(project, model)

    # A sync handler: FastAPI runs it in its threadpool, so drawing the plots never blocks
    # the event loop that answers /webhook within Label Studio's 1 s.
    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard_of(project: ProjectId, model: Backend) -> HTMLResponse:
        return HTMLResponse(dashboard.render(campaign(project, model)))

    # Sync, as the dashboard: reading every task from Label Studio takes a while.
    @app.get(
        "/export",
        response_class=Response,
        responses={
            status.HTTP_200_OK: {
                "content": {"application/x-ndjson": {}},
                "description": "the dataset, one JSON object per line; the counts of what it "
                "holds and left out in the X-Export-Summary header (JSON)",
            },
            **unknown_project,
            status.HTTP_409_CONFLICT: {"model": Problem, "description": "no Label Studio key"},
            status.HTTP_502_BAD_GATEWAY: {
                "model": Problem,
                "description": "Label Studio could not be read",
            },
        },
    )
    def export_of(
        project: ProjectId,
        model: Backend,
        fmt: Annotated[
            ExportFormat, Query(alias="format", description="pairs (HyPER) or trl (TRL)")
        ] = ExportFormat.PAIRS,
    ) -> Response:
        """The campaign's preference dataset as a download, as ``hyper-ls export`` writes it."""
        if model.store.project(project) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"project {project} was never set up")
        if model.pipeline.label_studio is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "LABEL_STUDIO_API_KEY is not set: the backend cannot read the tasks and "
                "their annotations from Label Studio",
            )
        try:
            exported = export_project(model.pipeline.label_studio.sdk, model.store, project)
        except ExportError as error:
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(error)) from None
        return Response(
            exported.jsonl(fmt),
            media_type="application/x-ndjson",
            headers={
                "Content-Disposition": f'attachment; filename="project-{project}-{fmt}.jsonl"',
                "X-Export-Summary": exported.summary(fmt).model_dump_json(),
            },
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus(model: Backend) -> Response:
        metrics.refresh(model)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def answer_webhook(model: HyperModel, event: WebhookEvent) -> str:
    with model.store.serving():  # the workers' database calls wait for the answer
        return model.webhook(event)


REFUSED_PATH = "/setup/refused"
_READABLE_IN_URL = "'(),;:=$/"
"""Characters a refusal keeps unescaped in its URL (requests leaves them as they are)."""


def refusal_url(reason: str) -> str:
    """Where a refused ``/setup`` sends its caller: a URL that reads as the reason.

    Label Studio shows a backend's refusal as ``str(requests.HTTPError)`` ("422 Client
    Error: Unprocessable Entity for url: ...") and drops the body; the URL is the one part
    of that text a backend controls. So a refusal answers 303, requests follows it with a
    GET, and Label Studio's connect dialog and Model card say "... for url:
    .../setup/refused?reason=the+label+config+has+no+Pairwise+or+Choices...". Angle
    brackets and double quotes are dropped from that copy (escaped, they would not read).
    """
    readable = reason.replace("<", "").replace(">", "").replace('"', "'")
    return f"{REFUSED_PATH}?reason={quote_plus(readable, safe=_READABLE_IN_URL)}"


def app_from_environment() -> FastAPI:
    """The app as ``hyper-ls serve`` runs it (uvicorn factory: one per worker process)."""
    return create_app(Settings())
