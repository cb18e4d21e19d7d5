"""Writing decisions back into Label Studio through label-studio-sdk, in bulk.

Every write is idempotent so a restart can replay it: the task's data fields are set (not
appended), and a prediction or annotation is created only if the task does not already
carry one from this backend. The backend's annotations are credited to a user of their own
(the owner of ``LABEL_STUDIO_JUDGE_API_KEY``, else ``JUDGE_EMAIL``), not to the person
whose API token the backend uses.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.data_manager import Column, Filters, Operator, Type

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.core.policy import Route
from hyper_ls_backend.ls.label_config import PreferenceConfig, Strength, prediction_result

log = logging.getLogger(__name__)

ROUTE_FIELD, SCORE_FIELD, REASON_FIELD = "hyper_route", "hyper_score", "hyper_reason"
SCORE_DECIMALS = 2
"""``hyper_score`` as the Data Manager shows and sorts it: each distinct value costs the
write-back one call (``LabelStudioClient._set_fields``), so it is kept to 101 values."""
LIST_PAGE = 1000
"""Tasks per page when the write-back lists tasks from the Data Manager."""
EXPORT_PAGE = 300
"""Tasks per export call when the write-back reads back what it wrote: their ids go in the
URL (``ids[]``, 19 bytes each at 8 digits), and a request line must stay under 8 KB, the
limit of nginx in front of Label Studio (its own uwsgi allows 64 KB)."""
WRITE_THREADS = 8
"""Annotations written one by one go from this many threads at once."""
TABS = {"HyPER: human queue": "human", "HyPER: AI-labelled": "ai"}
CLEAR_CONFIDENCE = 0.8
"""Judge confidence from which a pre-filled answer says "clearly" rather than "slightly"."""
JUDGE_EMAIL = "hyper-judge@hyper-ls.invalid"
"""The Label Studio user the judge's annotations are credited to. ``.invalid`` is a domain
reserved never to resolve (RFC 2606): no mail can reach it, and the user has no password,
so nobody can log in as it."""
JUDGE_NAME = ("HyPER", "judge")
"""First and last name Label Studio shows for the judge's annotations."""


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

    task_id: int
    route: Route
    score: float
    reason: str
    model_version: str
    label: Label | None = None
    confidence: float | None = None
    annotate: bool = True
    fresh: bool = False
    """The decision was just made: nothing can have been written for it yet, so the
    write-back need not look for an earlier prediction first."""


def route_fields(item: WriteBack) -> dict[str, str | float]:
    """The fields a decision adds to its task's data (the Data Manager's columns, and the
    route its tabs filter on)."""
    return {
        ROUTE_FIELD: item.route.value,
        SCORE_FIELD: round(item.score, SCORE_DECIMALS),
        REASON_FIELD: item.reason,
    }


@dataclass(frozen=True)
class Written:
    """What a task carries from this backend: its prediction of the decision's model
    version and the annotation made from it (None: not there)."""

    prediction_id: int | None = None
    annotation_id: int | None = None


def _act(
    sdk: LabelStudio,
    action: str,
    project_id: int,
    task_ids: list[int],
    params: dict[str, Any],
    refused: str,
) -> bool:
    """Run a Data Manager action on the tasks (never an empty list: Label Studio reads an
    empty selection as every task). False, logged with what happens instead (``refused``),
    when Label Studio refuses it (4xx: a version without the action, a token that may not
    run it); any other error is raised."""
    try:
        sdk.actions.create(
            id=action,
            project=project_id,
            selected_items={"all": False, "included": task_ids},
            request_options={"additional_body_parameters": params},
        )
    except ApiError as error:
        if not 400 <= error.status_code < 500:
            raise
        log.warning(
            'Label Studio refused the Data Manager action "%s" (HTTP %d): %s',
            action.replace("_", " "),
            error.status_code,
            refused,
        )
        return False
    return True


def strength_for(confidence: float | None) -> Strength:
    return Strength.CLEAR if (confidence or 0.0) >= CLEAR_CONFIDENCE else Strength.SLIGHT


class LabelStudioClient:
    """The backend's view of one Label Studio server (a thin layer over the SDK)."""

    def __init__(
        self,
        client: LabelStudio,
        judge_client: LabelStudio | None = None,
        read_back_export: bool = True,
    ) -> None:
        self.sdk = client
        self.judge_sdk = judge_client
        """The judge's own Label Studio user's client (``LABEL_STUDIO_JUDGE_API_KEY``):
        its annotations are then made in bulk, credited to that user."""
        self.read_back_export = read_back_export
        """Read what a write-back made from the export of the tasks (``_written``), not
        from the Data Manager's list (``LABEL_STUDIO_READ_BACK_EXPORT``); turned off
        when Label Studio refuses the export."""
        self._assignment_unavailable = False
        self._fields_one_by_one = False
        self._convert_refused = False
        self._judge_lock = threading.Lock()
        self._judge_id: int | None = None
        self._judge_refused = False

    @cached_property
    def user_id(self) -> int:
        """The Label Studio user the backend acts as (its API token's owner)."""
        return int(self.sdk.users.whoami().id)

    def judge_user_id(self) -> int | None:
        """The judge's own Label Studio user: the owner of the judge's token if it has one,
        else the user ``JUDGE_EMAIL``, created on first use if it does not exist.

        Label Studio's open-source API hands out no token for another user, but an
        annotation created with ``completed_by`` is credited to that user (see the README),
        so the judge needs no token of its own; one lets its annotations be made in bulk.
        None where the token may not list or create
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
            if self.judge_sdk is not None:
                self._judge_id = int(self.judge_sdk.users.whoami().id)
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
    def connect(
        cls,
        url: str,
        api_key: str,
        judge_api_key: str | None = None,
        timeout: float = 30.0,
        read_back_export: bool = True,
    ) -> LabelStudioClient:
        def client(key: str) -> LabelStudio:
            return LabelStudio(base_url=url, api_key=key, timeout=timeout)

        return cls(
            client(api_key), client(judge_api_key) if judge_api_key else None, read_back_export
        )

    def write_many(
        self,
        project_id: int,
        config: PreferenceConfig,
        items: Sequence[WriteBack],
        check_human: bool = True,
    ) -> dict[int, Written]:
        """Write decisions of one project in as few calls as Label Studio allows; returns
        what each task got, for every task still in Label Studio (a deleted one is simply
        not in the answer). A human-routed task carries nothing to read back, only whether
        it still exists, which assigning it needs: without ``check_human`` it is not read
        and is in the answer with nothing (a deleted one is then also recorded as written
        with nothing). Not reading them took the read-back of an import's final write
        of about 400 tasks from 2.3-3.6 s to 1.3-1.8 s (``docs/benchmarks.md``).

        Label Studio (one Django process) answers a few writes a second on a small machine,
        so what is done per task bounds an import (``benchmarks/label_studio_writes.py``):
        one call per task per kind of write would cost minutes for a thousand tasks, where
        one call for all of them costs a fraction of a second. So:

        1. the AI-routed tasks' predictions: one ``import_predictions`` (those already made
           are found first, unless every decision is ``fresh``);
        2. the annotations made from them (annotate mode): one Data Manager action
           "predictions to annotations" when the judge has a token of its own, else one
           call per task crediting the judge's user (``_annotate_each``);
        3. the route fields: the Data Manager action "add or modify data field", once per
           field and value (``_set_fields``), the route last, so a task that shows a route
           already carries its prediction and annotation;
        4. the export of the tasks reads back the ids (of the AI-routed ones only, without
           ``check_human``; ``_written``).
        """
        if not items:  # an empty selection is every task of the project to Label Studio
            return {}
        started = time.perf_counter()
        ai = [item for item in items if item.route is Route.AI and item.label is not None]
        if ai:
            made = {} if all(item.fresh for item in ai) else self._carried(project_id, ai)
            self._import_predictions(
                project_id,
                config,
                [item for item in ai if made.get(item.task_id, Written()).prediction_id is None],
            )
        predicted = time.perf_counter()
        annotate = [item for item in ai if item.annotate]
        if annotate and not self._convert(project_id, annotate):
            self._annotate_each(project_id, config, annotate)
        annotated = time.perf_counter()
        calls = self._set_fields(project_id, items)
        fields = time.perf_counter()
        unread = {
            item.task_id: Written()
            for item in items
            if not check_human and item.route is Route.HUMAN
        }
        read = [item for item in items if item.task_id not in unread]
        carried = self._written(project_id, read) | unread
        log.info(
            "project %d: wrote back %d decisions in %.1f s (predictions %.1f s, %d "
            "annotations %.1f s, fields %.1f s in %d calls, ids read back %.1f s)",
            project_id,
            len(items),
            time.perf_counter() - started,
            predicted - started,
            len(annotate),
            annotated - predicted,
            fields - annotated,
            calls,
            time.perf_counter() - fields,
        )
        return carried

    def _carried(self, project_id: int, items: Sequence[WriteBack]) -> dict[int, Written]:
        """What each of the items' tasks still in Label Studio carries from this backend,
        read in one list of the tasks."""
        if not items:
            return {}
        versions = {item.task_id: item.model_version for item in items}
        found: dict[int, Written] = {}
        for task in self._listed(project_id, sorted(versions)):
            if task.id not in versions:
                continue
            ids = sorted(
                int(extra["id"])
                for prediction in task.predictions or []
                if prediction.model_version == versions[task.id]
                and "id" in (extra := prediction.model_extra or {})
            )
            if not ids:
                found[task.id] = Written()
                continue
            annotations = [
                int(a["id"]) for a in task.annotations or [] if a.get("parent_prediction") == ids[0]
            ]
            found[task.id] = Written(ids[0], annotations[0] if annotations else None)
        return found

    def _written(self, project_id: int, items: Sequence[WriteBack]) -> dict[int, Written]:
        """``_carried`` for items just written, each AI-routed one with its prediction made:
        read from Label Studio's export of the tasks, a third of the Data Manager list's
        time (300 tasks: 0.53 s against 1.46 s, ``benchmarks/label_studio_writes.py``).
        The export names a task's predictions by id only, so a task carrying one has
        ours; one carrying several is read from the list, which gives their model
        versions. A human-routed task carries nothing of ours.
        A Label Studio refusing the export (Enterprise answers 404: it has only the
        asynchronous export) is read from the list, from then on, logged once. Label
        Studio keeps a copy of each export it serves in its export directory (README),
        which ``read_back_export`` off avoids."""
        by_task = {item.task_id: item for item in items}
        try:
            exported = self._exported(project_id, sorted(by_task)) if self.read_back_export else []
        except ApiError as error:
            if not 400 <= error.status_code < 500:
                raise
            log.warning(
                "Label Studio refused the export of tasks (HTTP %d): the ids of what the "
                "write-back made are read from the Data Manager's list, which takes longer",
                error.status_code,
            )
            self.read_back_export = False
        if not self.read_back_export:
            return self._carried(project_id, items)
        found: dict[int, Written] = {}
        several: list[WriteBack] = []
        for task in exported:
            item = by_task.get(task["id"])
            if item is None:
                continue
            predictions = task.get("predictions") or []
            if item.route is not Route.AI or item.label is None or not predictions:
                found[item.task_id] = Written()
            elif len(predictions) > 1:
                several.append(item)
            else:
                prediction = int(predictions[0])
                annotations = [
                    int(a["id"])
                    for a in task.get("annotations") or []
                    if a.get("parent_prediction") == prediction
                ]
                found[item.task_id] = Written(prediction, annotations[0] if annotations else None)
        return found | self._carried(project_id, several)

    def _exported(self, project_id: int, task_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Those of the tasks still in the project as Label Studio's JSON export gives
        them (annotations in full, predictions as ids), ``EXPORT_PAGE`` a call. The SDK
        sends ``ids``, which Label Studio ignores (it reads ``ids[]``, and would export
        every task): the ids go as ``ids[]`` in the request's own parameters."""
        exported = []
        for start in range(0, len(task_ids), EXPORT_PAGE):
            chunks = self.sdk.projects.exports.download_sync(
                project_id,
                export_type="JSON",
                download_all_tasks=True,
                download_resources=False,
                request_options={
                    "additional_query_parameters": {
                        "ids[]": list(task_ids[start : start + EXPORT_PAGE])
                    }
                },
            )
            exported += json.loads(b"".join(chunks))
        return exported

    def _listed(self, project_id: int, task_ids: Sequence[int]) -> Iterator[Any]:
        """Those of the tasks still in the project, with all their fields, one list call
        per ``LIST_PAGE`` of them (the SDK's pager would ask for a page past the last,
        which costs Label Studio the filtered query again)."""
        for start in range(0, len(task_ids), LIST_PAGE):
            selected = {"all": False, "included": list(task_ids[start : start + LIST_PAGE])}
            page = self.sdk.tasks.list(
                project=project_id,
                fields="all",
                query=json.dumps({"selectedItems": selected}),
                resolve_uri=False,
                page_size=LIST_PAGE,
            )
            yield from page.items or []

    def _import_predictions(
        self, project_id: int, config: PreferenceConfig, items: Sequence[WriteBack]
    ) -> None:
        """The items' predictions in one ``import_predictions``. Label Studio validates
        them against the config and drops those it rejects (``created`` says how many it
        kept); it refuses the whole import when one of its tasks was deleted: they are then
        made one by one, and a deleted task's is skipped."""
        request = [
            {
                "task": item.task_id,
                "result": prediction_result(config, item.label, strength_for(item.confidence)),
                "score": item.confidence if item.confidence is not None else 0.5,
                "model_version": item.model_version,
            }
            for item in items
            if item.label is not None
        ]
        if not request:
            return
        try:
            created = self.sdk.projects.import_predictions(id=project_id, request=request).created
        except ApiError as error:
            if error.status_code != 400:
                raise
            log.warning(
                "Label Studio refused the predictions of %d tasks of project %d at once "
                "(HTTP 400: a task deleted?): writing them one by one",
                len(request),
                project_id,
            )
            for prediction in request:
                with suppress(TaskGone), _task_gone_on_missing(prediction["task"]):
                    self.sdk.predictions.create(**prediction)
            return
        if created != len(request):
            log.warning(
                "Label Studio kept %s of %d predictions imported into project %d: the "
                "others are written one by one",
                created,
                len(request),
                project_id,
            )
            carried = self._carried(project_id, items)
            for prediction in request:
                found = carried.get(prediction["task"])  # None: deleted meanwhile
                if found is not None and found.prediction_id is None:
                    with suppress(TaskGone), _task_gone_on_missing(prediction["task"]):
                        self.sdk.predictions.create(**prediction)

    def _convert(self, project_id: int, items: Sequence[WriteBack]) -> bool:
        """The items' predictions made into annotations by the Data Manager action
        "predictions to annotations", called with the judge's token so Label Studio
        credits the judge's user; a prediction already annotated is left as it is (the
        action converts only predictions without an annotation), so a retry adds none.
        False when there is no judge token, or Label Studio refuses the action to it (a
        role that may not run it, a version without it): then once per client, logged."""
        if self.judge_sdk is None or self._convert_refused:
            return False
        by_version: dict[str, list[int]] = defaultdict(list)
        for item in items:
            by_version[item.model_version].append(item.task_id)
        for version, task_ids in by_version.items():
            if not _act(
                self.judge_sdk,
                "predictions_to_annotations",
                project_id,
                task_ids,
                {"model_version": version},
                refused="the judge's annotations are made one by one",
            ):
                self._convert_refused = True
                return False
        return True

    def _annotate_each(
        self, project_id: int, config: PreferenceConfig, items: Sequence[WriteBack]
    ) -> None:
        """One annotation per task, from its prediction, credited to the judge's user
        (``completed_by``): Label Studio's open-source API has no bulk annotation that
        names its author, so without a token of the judge's own this costs a call per
        task (see the README). Tasks deleted meanwhile are skipped."""
        carried = self._written(project_id, items)
        judge = self.judge_user_id()
        author = {"completed_by": judge} if judge is not None else {}

        def annotate(item: WriteBack) -> None:
            found = carried.get(item.task_id)  # None: deleted meanwhile
            if (
                found is None
                or found.prediction_id is None
                or found.annotation_id is not None
                or item.label is None
            ):
                return
            result = prediction_result(config, item.label, strength_for(item.confidence))
            with suppress(TaskGone), _task_gone_on_missing(item.task_id):
                self.sdk.annotations.create(
                    id=item.task_id,
                    result=result,
                    parent_prediction=found.prediction_id,
                    ground_truth=False,
                    **author,
                )

        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            list(pool.map(annotate, items))

    def _set_fields(self, project_id: int, items: Sequence[WriteBack]) -> int:
        """Set the route fields in the tasks' data, keeping every other field as it is.

        Label Studio has no partial update of ``data`` through the task API (a PATCH
        replaces the whole dict, and the Data Manager tabs filter on ``data.*`` only), but
        its Data Manager action "add or modify data field" sets one field to one value in
        every selected task, on the server: Label Studio reads and writes each task's data
        itself (``jsonb_set`` on PostgreSQL), so an edit made in Label Studio meanwhile is
        kept. One call per field and value: the values are kept few (``route_fields``).
        A Label Studio without the action gets the fields task by task (``_patch_fields``).
        Returns the number of calls made.
        """
        groups: dict[tuple[str, str | float], list[int]] = defaultdict(list)
        for item in items:
            for name, value in route_fields(item).items():
                groups[(name, value)].append(item.task_id)
        for (name, value), task_ids in sorted(
            groups.items(), key=lambda group: group[0][0] == ROUTE_FIELD
        ):
            if self._fields_one_by_one:
                break
            self._fields_one_by_one = not _act(
                self.sdk,
                "add_data_field",
                project_id,
                task_ids,
                {
                    "value_name": name,
                    "value_type": "Number" if isinstance(value, float) else "String",
                    "value": value,
                },
                refused="the route fields are written task by task",
            )
        if self._fields_one_by_one:
            for item in items:
                with suppress(TaskGone):
                    self._patch_fields(project_id, item)
            return len(items)
        return len(groups)

    def _patch_fields(self, project_id: int, item: WriteBack) -> None:
        """The route fields of one task: its data read just before it is replaced (Label
        Studio offers no conditional write, so an edit saved between the read and the
        PATCH, one round trip, is lost)."""
        by_id = Filters.create(
            Filters.AND,
            [Filters.item(Column.id, Operator.EQUAL, Type.Number, Filters.value(item.task_id))],
        )
        page = self.sdk.tasks.list(
            project=project_id, query=json.dumps({"filters": by_id}), resolve_uri=False
        )
        current = next(
            (task.data or {} for task in page.items or [] if task.id == item.task_id), None
        )
        if current is None:
            raise TaskGone(item.task_id)
        with _task_gone_on_missing(item.task_id):
            self.sdk.tasks.update(id=str(item.task_id), data={**current, **route_fields(item)})

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
