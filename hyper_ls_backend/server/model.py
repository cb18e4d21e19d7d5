"""The backend's model class, in the shape label-studio-ml users know: ``setup``,
``predict(tasks, context)``, ``fit(event, data)``; plus the wiring that builds it."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hyper_ls_backend.core.policy import Route
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.jobs.certification import Certifier
from hyper_ls_backend.jobs.learning import Learner
from hyper_ls_backend.jobs.pipeline import Pipeline, RouterRegistry
from hyper_ls_backend.jobs.queue import ConsumerProcess, JobQueue, make_huey
from hyper_ls_backend.lm.build import build_panel_and_tagger
from hyper_ls_backend.ls.client import LabelStudioClient, strength_for
from hyper_ls_backend.ls.label_config import (
    PreferenceConfig,
    parse_label_config,
    prediction_result,
)
from hyper_ls_backend.ls.setup import WEBHOOK_ACTIONS
from hyper_ls_backend.priors import load_default_router
from hyper_ls_backend.server.inbox import ImportInbox
from hyper_ls_backend.server.schemas import MAX_ID, WebhookEvent
from hyper_ls_backend.settings import Settings, parse_extra_params
from hyper_ls_backend.store import Store
from hyper_ls_backend.store.schema import DecisionRecord
from hyper_ls_backend.store.writers import Idle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Receipt:
    """A webhook's import as received on an event loop: the answer, once it is stored."""

    stored: Future[None]
    status: str


@dataclass
class HyperModel:
    """One backend instance: state, pipeline, queue. Built once per server process."""

    settings: Settings
    store: Store
    pipeline: Pipeline
    queue: JobQueue
    consumer: ConsumerProcess | None = None
    """The queue's consumer process (``QUEUE_CONSUMER=process``); None: threads here."""
    _set_up: set[int] = field(default_factory=set, init=False, repr=False)
    """Projects known to be set up: a project is never deleted from the store, so one seen
    once is not read again (that read cost a webhook more CPU than storing its tasks)."""
    inbox: ImportInbox = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.inbox = ImportInbox(self.store, self.queue)

    @classmethod
    def build(
        cls, settings: Settings, immediate: bool = False, idle: Idle | None = None
    ) -> HyperModel:
        """``idle``: the server's, in its queue consumer process (``consume``)."""
        consumer = (
            ConsumerProcess(consume, settings) if settings.queue_consumer == "process" else None
        )
        store = Store(settings.sqlalchemy_url, consumer.idle if consumer else idle)
        prior = (
            Router.load(settings.hyper_router_model)
            if settings.hyper_router_model
            else load_default_router()
        )
        judge, tagger = build_panel_and_tagger(settings, tag_cache=store)
        key, judge_key = settings.label_studio_api_key, settings.label_studio_judge_api_key
        label_studio = (
            LabelStudioClient.connect(
                settings.label_studio_url,
                key.get_secret_value(),
                judge_key.get_secret_value() if judge_key else None,
                read_back_export=settings.label_studio_read_back_export,
            )
            if key
            else None
        )
        routers = RouterRegistry(store, prior)
        pipeline = Pipeline(settings, store, routers, judge, tagger, label_studio)
        learner = Learner(settings, store, routers)
        queue = JobQueue(
            make_huey(settings, immediate=immediate),
            pipeline,
            learner,
            settings.threads,
            Certifier(settings, store, routers),
        )
        return cls(settings, store, pipeline, queue, consumer)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Record the imports a stopped process left received, re-enqueue the work the
        database says is left, then start the queue's consumer where ``QUEUE_CONSUMER``
        says, and the inbox's thread (not in immediate mode, where a webhook's import is
        routed before it is answered). Before any request is answered: an import received
        while a consumer process starts is not enqueued twice (its 50 jobs again, ahead of
        its write-back, once cost an import of 1,000 half a minute)."""
        if left := self.inbox.drain(route=False):
            log.info("recorded %d imports received before the last stop", left)
        self.resume()
        if self.consumer is not None:
            self.consumer.start()
        else:
            self.queue.start()
        if not self.queue.huey.immediate:
            self.inbox.start()
        for note in self.notes():
            log.warning(note)

    def resume(self) -> None:
        """Re-enqueue the work the database says is left (see ``jobs/queue.py``)."""
        self.queue.resume(self.store.undecided_tasks())
        unwritten = [(d.project_id, d.task_id) for d in self.store.unwritten_decisions()]
        if self.pipeline.label_studio is not None:
            self.queue.resume(unwritten)

    def stop(self) -> None:
        self.inbox.stop()
        if self.consumer is not None:
            self.consumer.stop()
        self.queue.stop()

    def notes(self) -> list[str]:
        """Plain statements about what this backend cannot do as configured."""
        notes = []
        if self.pipeline.judge is None:
            notes.append(
                "no LM judge configured (set ANTHROPIC_API_KEY, or HYPER_JUDGE_PROVIDER=openai "
                "with HYPER_JUDGE_BASE_URL and HYPER_JUDGE_MODEL): every task goes to humans"
            )
        if self.pipeline.label_studio is None:
            notes.append(
                "LABEL_STUDIO_API_KEY is not set: decisions are stored but not written back "
                "to Label Studio, and /predict is the only way to see them"
            )
        return notes

    # -- the label-studio-ml contract ------------------------------------------------------

    def setup(self, project_id: int, label_config: str, extra_params: Any) -> str:
        """Check the project can be served; returns the model version it will be served by.

        Raises ValueError naming what is missing from the config or wrong in extra params.
        """
        parse_label_config(label_config)
        params = parse_extra_params(extra_params)
        self.settings.for_project(params)
        self.store.save_project(project_id, label_config, params)
        self._set_up.add(project_id)
        return self.pipeline.routers.for_project(project_id).version

    def predict(
        self, project_id: int, tasks: list[dict[str, Any]]
    ) -> list[dict[str, Any] | list[dict[str, Any]]]:
        """One result per task, in order: the stored decision, routing unseen tasks now.

        A task with nothing to store gets an empty list of predictions, not an empty
        prediction: Label Studio 1.23 stores every prediction it is given, ``"result": []``
        too, and shows it to the annotator as a model's answer, but stores nothing for an
        empty list (``ml/models.py``, ``_get_predictions_from_ml_backend``: a list is the
        task's predictions). Leaving the task out instead would make Label Studio ask again
        task by task, or drop the whole batch. Nothing to store: a human-routed or undecided
        task, and a task whose prediction the write-back already created. Label Studio asks
        again for a task without a prediction of the model version ``/setup`` names, so
        after a refit every AI-routed task opened would otherwise gain a copy, and a task
        routed by this very call (its write-back just made the prediction) a second one.
        """
        config = parse_label_config(self.store.project(project_id).label_config)
        self.store.record_tasks(project_id, tasks)
        results: list[dict[str, Any] | list[dict[str, Any]]] = []
        for task in tasks:
            task_id = int(task["id"])
            decision = self.store.decision(project_id, task_id)
            if decision is None:  # not waiting for its import: see jobs/pipeline.py
                self.pipeline.route_task(project_id, task_id, alone=True)
                decision = self.store.decision(project_id, task_id)  # as written back
            if decision is None or decision.prediction_id is not None:
                results.append([])
                continue
            prediction = prediction_for(decision, config)
            results.append(prediction if prediction is not None else [])
        return results

    def webhook(self, event: WebhookEvent) -> str:
        """Store what the event carries and enqueue the work; returns what was done."""
        if event.action == "TASKS_CREATED":
            return self._tasks_created(event)
        if event.action in LABEL_EVENTS:
            return self.fit(event.action, event.model_dump())
        if event.action == "START_TRAINING" and event.project is not None:
            self.queue.refit(event.project.id)
            return f"refit of project {event.project.id} queued"
        return "ignored"

    def receive_import(self, event: WebhookEvent) -> Receipt | None:
        """``webhook`` for an event loop, where it can answer without waiting: the import
        of a project known to be set up, once the inbox's thread runs. None: the event
        is for ``webhook``. The loop only waits for the future, not in a thread of its
        pool: 50 webhooks at once, each sending a thread to wait for a shared
        transaction, took 50 ms more to answer."""
        project = event.project
        if (
            event.action != "TASKS_CREATED"
            or project is None
            or not event.tasks
            or project.id not in self._set_up
            or not self.inbox.running
        ):
            return None
        tasks = self._with_ids(project.id, event.tasks)
        return Receipt(self.inbox.post(project.id, tasks), received(tasks, event.tasks))

    def _tasks_created(self, event: WebhookEvent) -> str:
        if event.project is None or not event.tasks:
            return "ignored: no project or no tasks in the payload"
        project_id = event.project.id
        if not self.is_set_up(project_id):
            if not event.project.label_config:
                return f"ignored: project {project_id} was never set up"
            try:
                self.setup(project_id, event.project.label_config, None)
            except ValueError as error:  # LabelConfigError too
                log.warning("project %d: imported tasks not routed: %s", project_id, error)
                return f"ignored: the project's label config cannot be routed: {error}"
        tasks = self._with_ids(project_id, event.tasks)
        self.inbox.receive(project_id, tasks)
        return received(tasks, event.tasks)

    @staticmethod
    def _with_ids(project_id: int, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with_ids = [task for task in tasks if has_task_id(task)]
        if len(with_ids) < len(tasks):
            log.warning(
                "project %d: %d imported tasks have no numeric id and were skipped",
                project_id,
                len(tasks) - len(with_ids),
            )
        return with_ids

    def is_set_up(self, project_id: int) -> bool:
        if project_id not in self._set_up and self.store.project(project_id) is not None:
            self._set_up.add(project_id)
        return project_id in self._set_up

    def fit(self, event: str, data: dict[str, Any]) -> str:
        """Human labels: store them as they come, forget deleted ones."""
        if event == "ANNOTATIONS_DELETED":
            ids = [int(a["id"]) for a in data.get("annotations", [])]
            return f"forgot {self.store.delete_human_labels(ids)} labels"
        annotation, project = data.get("annotation") or {}, data.get("project") or {}
        if not annotation or "id" not in project:
            return "ignored: no annotation"
        if annotation.get("was_cancelled"):
            return "ignored: skipped task"
        task_id = annotation.get("task") or (data.get("task") or {}).get("id")
        if task_id is None:
            return "ignored: the annotation names no task"
        if annotation.get("parent_prediction") and self._made_by_backend(annotation):
            return "ignored: the backend's own annotation"
        stored = self.store.project(int(project["id"]))
        if stored is None:
            return "ignored: project was never set up"
        answer = parse_label_config(stored.label_config).read_answer(annotation.get("result") or [])
        if answer is None:
            return "ignored: no preference in the annotation"
        self.store.save_human_label(
            int(annotation["id"]),
            project_id=int(project["id"]),
            task_id=int(task_id),
            label=answer.label.value,
            choice=answer.choice,
            strength=answer.strength.value if answer.strength else None,
            annotator=last_editor(annotation),
        )
        project_id = int(project["id"])
        every = self.settings.for_project(stored.extra_params).hyper_refit_every
        if self.store.claim_refit(project_id, every):
            self.queue.refit(project_id)
            return f"stored label {answer.label.value}; refit queued"
        return f"stored label {answer.label.value}"

    def _made_by_backend(self, annotation: dict[str, Any]) -> bool:
        """Created by the backend (credited to the judge's user or the token's owner) and
        not changed since by anyone else: a person who corrects a pre-fill in place leaves
        ``completed_by`` the judge's and becomes ``updated_by``, and that is a human label."""
        client = self.pipeline.label_studio
        return (
            client is not None
            and client.is_backend_user(completed_by(annotation))
            and client.is_backend_user(last_editor(annotation))
        )


def consume(settings: Settings, idle: Idle, restarted: bool) -> None:
    """The queue's consumer process (``ConsumerProcess``): the backend built from
    ``settings`` runs its consumer threads until SIGTERM, or until the server's process is
    gone (killed: multiprocessing's sentinel for the process that started this one, not
    the fork server it was forked from, which lives as long as this process); one
    ``restarted`` after another died first re-enqueues the work left (the jobs the dead
    one was running). A Ctrl-C reaches the whole process group: the server stops this
    process."""
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server = multiprocessing.parent_process()
    settings = settings.model_copy(update={"queue_consumer": "threads"})
    model = HyperModel.build(settings, idle=idle)
    if restarted:
        model.resume()
    with start_up_objects_frozen():
        model.queue.start()
        log.info("queue consumer process %d consuming", os.getpid())
        while not stop.wait(ORPHAN_CHECK) and (server is None or server.is_alive()):
            pass
        model.stop()


@contextmanager
def start_up_objects_frozen() -> Iterator[None]:
    """Keep what the process built until now (the libraries, the priors: some 456,000
    objects, nearly all alive until the end) out of the garbage collector's full
    collections until the block ends (``gc.freeze``). A full collection visits every
    object it sees: 210 ms for the server's, stopping it amid a burst of webhooks
    (``benchmarks/server_overhead.py``)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ORPHAN_CHECK = 1.0
"""Seconds between the consumer process's looks at whether the server is still there."""
LABEL_EVENTS = frozenset(WEBHOOK_ACTIONS) - {"TASKS_CREATED"}


def completed_by(annotation: dict[str, Any]) -> int | None:
    """LS sends ``completed_by`` as an id or as a user object."""
    return _user_id(annotation.get("completed_by"))


def last_editor(annotation: dict[str, Any]) -> int | None:
    """Who saved the annotation last: ``updated_by`` where Label Studio sends it."""
    editor = _user_id(annotation.get("updated_by"))
    return editor if editor is not None else completed_by(annotation)


def _user_id(user: Any) -> int | None:
    if isinstance(user, dict):
        user = user.get("id")
    return int(user) if user is not None else None


def received(tasks: list[dict[str, Any]], delivered: list[dict[str, Any]]) -> str:
    """A ``TASKS_CREATED`` webhook's answer: the tasks received of those delivered."""
    skipped = len(delivered) - len(tasks)
    return f"received {len(tasks)} tasks" + (
        f"; skipped {skipped} without an id" if skipped else ""
    )


def has_task_id(task: dict[str, Any]) -> bool:
    """Whether the task carries an id (in the range the wire schema takes)."""
    try:
        return 0 <= int(task["id"]) <= MAX_ID
    except (KeyError, TypeError, ValueError):
        return False


def prediction_for(decision: DecisionRecord, config: PreferenceConfig) -> dict[str, Any] | None:
    """The judge's answer as a prediction for an AI-routed task; None (nothing to store)
    for a human-routed one: a visible pre-fill anchors annotators."""
    if decision.route is not Route.AI or not decision.judge_label:
        return None
    return {
        "result": prediction_result(
            config, decision.judge_label, strength_for(decision.judge_confidence)
        ),
        "score": float(decision.score),
        "model_version": decision.model_version,
    }
