"""Writing decisions back into Label Studio through label-studio-sdk.

Every write is idempotent so a restart can replay it: the task's data fields are set (not
appended), and a prediction or annotation is created only if the task does not already
carry one from this backend. The backend's annotations are credited to a user of their own
(``JUDGE_EMAIL``), not to the person whose API token the backend uses.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.request_options import RequestOptions
from label_studio_sdk.data_manager import Column, Filters, Operator, Type

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.core.policy import Route
from hyper_ls_backend.ls.label_config import PreferenceConfig, Strength, prediction_result

log = logging.getLogger(__name__)

ROUTE_FIELD, SCORE_FIELD, REASON_FIELD = "hyper_route", "hyper_score", "hyper_reason"
TABS = {"HyPER: human queue": "human", "HyPER: AI-labelled": "ai"}
CLEAR_CONFIDENCE = 0.8
"""Judge confidence from which a pre-filled answer says "clearly" rather than "slightly"."""
JUDGE_EMAIL = "hyper-judge@hyper-ls.invalid"
"""The Label Studio user the judge's annotations are credited to. ``.invalid`` is a domain
reserved never to resolve (RFC 2606): no mail can reach it, and the user has no password,
so nobody can log in as it."""
JUDGE_NAME = ("HyPER", "judge")
"""First and last name Label Studio shows for the judge's annotations."""
AS_STORED: RequestOptions = {"additional_query_parameters": {"resolve_uri": "false"}}
"""Read a task's data as stored: by default Label Studio turns storage URIs (``s3://...``)
into its own proxy links, which written back would replace the user's URIs."""


class TaskGone(LookupError):
    """The task was deleted in Label Studio before its decision could be written."""


@contextmanager
def _task_gone_on_missing(task_id: int) -> Iterator[None]:
    """Turn Label Studio's "no such task" answers into TaskGone: 404 from the task and
    annotation endpoints, 400 naming the ``task`` field from the prediction endpoint."""
    try:
        yield
    except ApiError as error:
        body = error.body if isinstance(error.body, dict) else {}
        invalid_task = "task" in (body.get("validation_errors") or {})
        if error.status_code == 404 or (error.status_code == 400 and invalid_task):
            raise TaskGone(task_id) from None
        raise


@dataclass(frozen=True)
class WriteBack:
    """What one routed task gets in Label Studio."""

    task: dict[str, Any]
    """The task as the backend received it: only its id and project are used, its data is
    read again from Label Studio when the route fields are added (see ``_add_fields``)."""
    route: Route
    score: float
    reason: str
    model_version: str
    label: Label | None = None
    confidence: float | None = None
    annotate: bool = True
    fresh: bool = False
    """The decision was just made: nothing can have been written for it yet, so the
    write-back need not look for an earlier prediction or annotation first."""

    @property
    def task_id(self) -> int:
        return int(self.task["id"])

    @property
    def project_id(self) -> int | None:
        """The task's project, as Label Studio sends it with every task (webhook, /predict)."""
        project = self.task.get("project")
        return project if isinstance(project, int) else None


@dataclass(frozen=True)
class Written:
    prediction_id: int | None = None
    annotation_id: int | None = None


@dataclass(frozen=True)
class Predicted:
    """A task's prediction from this backend, and the annotation made from it if any."""

    prediction_id: int
    annotation_id: int | None = None


def strength_for(confidence: float | None) -> Strength:
    return Strength.CLEAR if (confidence or 0.0) >= CLEAR_CONFIDENCE else Strength.SLIGHT


class LabelStudioClient:
    """The backend's view of one Label Studio server (a thin layer over the SDK)."""

    def __init__(self, client: LabelStudio) -> None:
        self.sdk = client
        self._assignment_unavailable = False
        self._judge_lock = threading.Lock()
        self._judge_id: int | None = None
        self._judge_refused = False

    @cached_property
    def user_id(self) -> int:
        """The Label Studio user the backend acts as (its API token's owner)."""
        return int(self.sdk.users.whoami().id)

    def judge_user_id(self) -> int | None:
        """The judge's own Label Studio user, created on first use if it does not exist.

        Label Studio's open-source API hands out no token for another user, but an
        annotation created with ``completed_by`` is credited to that user (see the README),
        so the judge needs no token of its own. None where the token may not list or create
        users (a non-admin token on Label Studio Enterprise): the annotations are then the
        token owner's, as the log says once.
        """
        return self._judge(create=True)

    def is_backend_user(self, user_id: int | None) -> bool:
        """Whether an annotation by ``user_id`` is the backend's own (not a human label):
        the judge's user, or the token's owner (annotations written before the judge had a
        user of its own). Looks the judge up, but never creates it."""
        if user_id is None:
            return False
        return user_id == self.user_id or user_id == self._judge(create=False)

    def _judge(self, create: bool) -> int | None:
        with self._judge_lock:
            if self._judge_id is not None or self._judge_refused:
                return self._judge_id
            try:
                self._judge_id = self._find_judge()
                if self._judge_id is None and create:
                    first_name, last_name = JUDGE_NAME
                    created = self.sdk.users.create(
                        username="hyper-judge",
                        email=JUDGE_EMAIL,
                        first_name=first_name,
                        last_name=last_name,
                    )
                    self._judge_id = int(created.id)
                    log.info("created the Label Studio user %s for the judge's labels", JUDGE_EMAIL)
            except ApiError as error:
                if error.status_code not in (401, 403):
                    raise
                self._judge_refused = True
                log.warning(
                    "Label Studio refused to list or create users with the backend's token "
                    "(HTTP %d): the judge's annotations are credited to the token's owner",
                    error.status_code,
                )
            return self._judge_id

    def _find_judge(self) -> int | None:
        for user in self.sdk.users.list():
            if user.email == JUDGE_EMAIL:
                return int(user.id)
        return None

    @classmethod
    def connect(cls, url: str, api_key: str, timeout: float = 30.0) -> LabelStudioClient:
        return cls(LabelStudio(base_url=url, api_key=api_key, timeout=timeout))

    def predict_many(
        self, project_id: int, config: PreferenceConfig, items: Sequence[WriteBack]
    ) -> dict[int, Predicted]:
        """The predictions of a chunk of decisions, in bulk: those of its AI-routed tasks
        that have none yet are created in one ``import_predictions`` call, and every
        prediction's id (with the annotation made from it, if there is one already) read
        back in one list of the chunk's tasks. Returns them by task id, for ``write``.

        Label Studio validates imported predictions against the config and drops those it
        rejects (``created`` says how many it kept); it refuses the whole import when one
        of its tasks was deleted. A task left without its prediction either way is simply
        not in the answer: ``write`` then creates it on its own, and fails or finds the task
        gone for that task alone. A chunk with a single prediction to make skips all this.
        """
        wanted = [item for item in items if item.route is Route.AI and item.label is not None]
        if len(wanted) < 2:
            return {}
        found = {} if all(item.fresh for item in wanted) else self._predicted(project_id, wanted)
        missing = [item for item in wanted if item.task_id not in found]
        if not missing:
            return found
        request = [
            {
                "task": item.task_id,
                "result": prediction_result(config, item.label, strength_for(item.confidence)),
                "score": item.confidence if item.confidence is not None else 0.5,
                "model_version": item.model_version,
            }
            for item in missing
            if item.label is not None
        ]
        try:
            created = self.sdk.projects.import_predictions(id=project_id, request=request).created
        except ApiError as error:
            if error.status_code != 400:
                raise
            log.warning(
                "Label Studio refused the predictions of %d tasks of project %d at once "
                "(HTTP 400: a task deleted?): writing them one by one",
                len(missing),
                project_id,
            )
            return found
        if created != len(request):
            log.warning(
                "Label Studio kept %s of %d predictions imported into project %d: the "
                "others are written one by one",
                created,
                len(request),
                project_id,
            )
        return self._predicted(project_id, wanted)

    def _predicted(self, project_id: int, items: Sequence[WriteBack]) -> dict[int, Predicted]:
        """Each item's prediction (of its model version) and the annotation made from it,
        read with the items' tasks in one list call."""
        versions = {item.task_id: item.model_version for item in items}
        selected = {"selectedItems": {"all": False, "included": sorted(versions)}}
        found: dict[int, Predicted] = {}
        for task in self.sdk.tasks.list(
            project=project_id, fields="all", query=json.dumps(selected), resolve_uri=False
        ):
            if task.id not in versions:
                continue
            ids = sorted(
                int(extra["id"])
                for prediction in task.predictions or []
                if prediction.model_version == versions[task.id]
                and "id" in (extra := prediction.model_extra or {})
            )
            if not ids:
                continue
            annotations = [
                int(a["id"]) for a in task.annotations or [] if a.get("parent_prediction") == ids[0]
            ]
            found[task.id] = Predicted(ids[0], annotations[0] if annotations else None)
        return found

    def write(
        self, config: PreferenceConfig, item: WriteBack, predicted: Predicted | None = None
    ) -> Written:
        """Write one decision (``predicted``: its prediction, from ``predict_many``). The
        route fields go last, so a task that shows a route in Label Studio (and in the HyPER
        tabs) already carries its prediction and annotation, and an AI-routed task leaves
        the labelling stream before it shows up as routed."""
        task_id = item.task_id
        with _task_gone_on_missing(task_id):
            written = (
                self._prefill(config, item, predicted) if item.route is Route.AI else Written()
            )
            self._add_fields(
                task_id,
                item.project_id,
                {
                    ROUTE_FIELD: item.route.value,
                    SCORE_FIELD: round(item.score, 4),
                    REASON_FIELD: item.reason,
                },
            )
        return written

    def _add_fields(self, task_id: int, project_id: int | None, fields: dict[str, Any]) -> None:
        """Set ``fields`` in the task's data, keeping every other field as it is now.

        Label Studio has no partial update of ``data``: a PATCH replaces the whole dict
        (``tasks/api.py`` ``TaskAPI`` with the plain ``TaskSimpleSerializer``), ``meta``
        likewise, and the Data Manager tabs filter on ``data.*`` only, so the route fields
        must be in ``data``. The task is therefore read just before it is written, not taken
        from the copy received at import. Label Studio offers no conditional write (no
        version or ETag to check), so one race remains: an edit saved in Label Studio
        between this read and the PATCH (one round trip) is overwritten.
        """
        current = self._current_data(task_id, project_id)
        self.sdk.tasks.update(id=str(task_id), data={**current, **fields})

    def _current_data(self, task_id: int, project_id: int | None) -> dict[str, Any]:
        """The task's data as stored now. Read from the project's task list: a task read on
        its own (``GET /api/tasks/ID``) that has no prediction makes Label Studio call the
        backend's ``/predict`` (and ``/setup``) first, a round trip back into this process
        for every human-routed task. Only a task received without its project is read so."""
        if project_id is None:
            return self.sdk.tasks.get(id=str(task_id), request_options=AS_STORED).data or {}
        by_id = Filters.create(
            Filters.AND,
            [Filters.item(Column.id, Operator.EQUAL, Type.Number, Filters.value(task_id))],
        )
        page = self.sdk.tasks.list(
            project=project_id, query=json.dumps({"filters": by_id}), resolve_uri=False
        )
        for task in page.items or []:
            if task.id == task_id:
                return task.data or {}
        raise TaskGone(task_id)

    def _prefill(
        self, config: PreferenceConfig, item: WriteBack, predicted: Predicted | None
    ) -> Written:
        """The prediction (``predicted``, else found or created now) and, in annotate
        mode, the annotation made from it (found, else created now)."""
        if item.label is None:
            return Written()
        task_id = item.task_id
        result = prediction_result(config, item.label, strength_for(item.confidence))
        if predicted is None:
            prediction_id = (None if item.fresh else self._existing_prediction(task_id, item)) or (
                self.sdk.predictions.create(
                    task=task_id,
                    result=result,
                    score=item.confidence if item.confidence is not None else 0.5,
                    model_version=item.model_version,
                ).id
            )
            annotation_id = None
            if item.annotate and not item.fresh:
                annotation_id = self._existing_annotation(task_id, prediction_id)
            predicted = Predicted(prediction_id, annotation_id)
        if not item.annotate:
            return Written(predicted.prediction_id)
        annotation_id = predicted.annotation_id or self._annotate(
            task_id, result, predicted.prediction_id
        )
        return Written(predicted.prediction_id, annotation_id)

    def _annotate(self, task_id: int, result: list[dict[str, Any]], prediction_id: int) -> int:
        judge = self.judge_user_id()
        author = {"completed_by": judge} if judge is not None else {}
        return self.sdk.annotations.create(
            id=task_id, result=result, parent_prediction=prediction_id, ground_truth=False, **author
        ).id

    def _existing_prediction(self, task_id: int, item: WriteBack) -> int | None:
        for prediction in self.sdk.predictions.list(task=task_id):
            if prediction.model_version == item.model_version:
                return prediction.id
        return None

    def _existing_annotation(self, task_id: int, prediction_id: int) -> int | None:
        for annotation in self.sdk.annotations.list(id=task_id):
            if annotation.parent_prediction == prediction_id:
                return annotation.id
        return None

    def ensure_tabs(self, project_id: int) -> None:
        """Create the two Data Manager tabs filtered on ``data.hyper_route`` (once)."""
        existing = {view.data.get("title") for view in self.sdk.views.list(project=project_id)}
        for title, route in TABS.items():
            if title in existing:
                continue
            filters = Filters.create(
                Filters.AND,
                [
                    Filters.item(
                        Column.data(ROUTE_FIELD), Operator.EQUAL, Type.String, Filters.value(route)
                    )
                ],
            )
            self.sdk.views.create(project=project_id, data={"title": title, "filters": filters})

    def assign(self, project_id: int, task_id: int, emails: list[str]) -> bool:
        """Assign a human-routed task to the named annotators (Label Studio Enterprise).

        Returns False, once per client with a log line, when the server has no task
        assignment (open source answers 404): tasks then stay in the shared queue.
        """
        if not emails or self._assignment_unavailable:
            return False
        users = [u.id for u in self.sdk.users.list() if u.email in set(emails)]
        try:
            self.sdk.projects.assignments.assign(
                id=project_id, task_pk=task_id, type="AN", users=users
            )
        except ApiError as error:
            if error.status_code not in (403, 404, 405):
                raise
            self._assignment_unavailable = True
            log.warning(
                "task assignment is not available on this Label Studio (open source edition?): "
                "human-routed tasks stay in the shared queue"
            )
            return False
        return True
