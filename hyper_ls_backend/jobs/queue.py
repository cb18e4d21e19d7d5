"""Background work over huey: SQLite in MODEL_DIR by default, Redis when ``REDIS_URL`` is set.

The database, not the queue, is the record of what is left to do: a webhook stores its
tasks before it enqueues anything, and on start the backend re-enqueues every task that
has no decision or whose decision is not yet written back. So a job lost with a killed
worker is redone on restart, and a job run twice changes nothing (``Pipeline.route_task``
is idempotent). Batches sent to the Message Batches API are recorded there too: the
queue's ``BatchPoller`` finds them from the database, so a restart resumes polling them.
"""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Sequence

from huey import Huey, RedisHuey
from huey.api import TaskWrapper
from huey.consumer import Consumer
from huey.storage import SqliteStorage

from hyper_ls_backend.jobs.batches import BatchPoller
from hyper_ls_backend.jobs.certification import Certifier
from hyper_ls_backend.jobs.forking import START_METHOD
from hyper_ls_backend.jobs.learning import Learner
from hyper_ls_backend.jobs.pipeline import Pipeline
from hyper_ls_backend.settings import Settings
from hyper_ls_backend.store.writers import Idle, SharedIdle

log = logging.getLogger(__name__)

CHUNK = 20
"""Tasks per job, judged at once (``Pipeline.route_tasks``): with the worker threads, how
many tasks can be in progress (8 x 20 keeps 320 LM requests waiting for the shared limit
of ``HYPER_JUDGE_CONCURRENCY``), and how many predictions go in one bulk write."""
RETRIES, RETRY_DELAY = 5, 5
IDLE_POLL_MAX = 0.5
"""Longest sleep of an idle worker thread between looks at the queue (huey's default is
10 s, its backoff from 0.1 s): an import's write-back is one job enqueued when its last
task is decided, and seconds of nobody looking are seconds added to every import."""


class QueueStorage(SqliteStorage):
    """huey's SQLite storage (WAL), committing without waiting for the disk
    (``synchronous=NORMAL``). The queue is not the record of what is left to do (see the
    module's docstring): a job lost with the last commits before a power cut is found again
    in the database on start. WAL keeps the file consistent all the same. With an fsync per
    commit, 50 webhooks enqueueing at once waited up to 90 ms for huey's lock, held by each
    other's fsyncs and the workers' dequeues."""

    def _create_connection(self) -> sqlite3.Connection:
        connection = super()._create_connection()
        connection.execute("pragma synchronous=NORMAL")
        return connection


def make_huey(settings: Settings, immediate: bool = False) -> Huey:
    if settings.redis_url:
        return RedisHuey("hyper-ls", url=settings.redis_url, immediate=immediate)
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    return Huey(
        "hyper-ls",
        storage_class=QueueStorage,
        filename=str(settings.model_dir / "queue.sqlite3"),
        immediate=immediate,
    )


class EmbeddedConsumer(Consumer):
    """A huey consumer living inside the web server's process: the server (uvicorn) owns
    the signals, so the consumer must not install its own handlers over them."""

    def _set_signal_handlers(self) -> None:
        pass


class JobQueue:
    """Enqueues routing work; runs it on an in-process consumer (threads)."""

    def __init__(
        self,
        huey: Huey,
        pipeline: Pipeline,
        learner: Learner,
        threads: int,
        certifier: Certifier | None = None,
    ) -> None:
        self.huey = huey
        self._threads = threads
        self._consumer = None
        self._route: TaskWrapper = huey.task(
            retries=RETRIES, retry_delay=RETRY_DELAY, name="route_tasks"
        )(self._retried_on_failure(pipeline.route_tasks))
        self._dispatch: TaskWrapper = huey.task(retries=RETRIES, retry_delay=RETRY_DELAY)(
            self._dispatch_job()
        )
        self._write: TaskWrapper = huey.task(
            retries=RETRIES, retry_delay=RETRY_DELAY, name="write_back"
        )(self._retried_on_failure(pipeline.write_back))
        self._refit: TaskWrapper = huey.task()(self._refit_job(learner, certifier))
        # An import is decided by the job that judges its last task: the others' jobs are
        # done by then, so their write-back is queued here, as one job (written in bulk).
        pipeline.on_decided = self.write_back
        self._poller = None
        if pipeline.batches is not None:  # answered batches' tasks are routed as any
            pipeline.batches.on_results = self.route
            self._poller = BatchPoller(pipeline.batches, pipeline.settings.hyper_judge_batch_poll)

    @staticmethod
    def _refit_job(learner: Learner, certifier: Certifier | None) -> Callable[[int], None]:
        def refit_router(project_id: int) -> None:
            learner.refit(project_id)
            if certifier is not None:  # the router in use may have changed: look again
                certifier.certify(project_id)

        return refit_router

    def refit(self, project_id: int) -> None:
        self._refit(project_id)

    def _dispatch_job(self) -> Callable[[int, list[int]], None]:
        def dispatch_tasks(project_id: int, task_ids: list[int]) -> None:
            for start in range(0, len(task_ids), CHUNK):
                self._route(project_id, task_ids[start : start + CHUNK])

        return dispatch_tasks

    @staticmethod
    def _retried_on_failure(
        step: Callable[[int, list[int]], list[int]],
    ) -> Callable[[int, list[int]], None]:
        """A job doing ``step`` (route, write back) for some tasks. One task that fails
        (Label Studio down, task deleted) must not hold back the others: ``step`` does
        them all and returns those that failed, then the job fails so huey retries it
        (what is done is skipped on the retry)."""

        def job(project_id: int, task_ids: list[int]) -> None:
            failed = step(project_id, task_ids)
            if failed:
                raise RuntimeError(f"project {project_id}: tasks {failed} failed, retrying")

        return job

    def write_back(self, project_id: int, task_ids: Sequence[int]) -> None:
        """One job writing back decided tasks, in bulk."""
        self._write(project_id, list(task_ids))

    def route(self, project_id: int, task_ids: Sequence[int]) -> None:
        """One job that fans out into chunks: a webhook pays for a single enqueue."""
        self._dispatch(project_id, list(task_ids))

    def resume(self, pending: Sequence[tuple[int, int]]) -> None:
        """Re-enqueue unfinished work found in the database at start-up."""
        by_project: dict[int, list[int]] = {}
        for project_id, task_id in pending:
            by_project.setdefault(project_id, []).append(task_id)
        for project_id, task_ids in by_project.items():
            log.info("resuming %d unfinished tasks of project %d", len(task_ids), project_id)
            self.route(project_id, task_ids)

    def start(self) -> None:
        if self.huey.immediate:
            return
        self._consumer = EmbeddedConsumer(
            self.huey,
            workers=self._threads,
            worker_type="thread",
            periodic=False,
            max_delay=IDLE_POLL_MAX,
        )
        self._consumer.start()
        if self._poller is not None:
            self._poller.start()

    def stop(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        if self._consumer is not None:
            self._consumer.stop(graceful=True)

    def pending(self) -> int:
        return self.huey.pending_count()


class ConsumerProcess:
    """The queue's consumer in a process of its own, started, restarted and stopped by the
    web server's process (``QUEUE_CONSUMER=process``).

    In the server's process the consumer's threads take the interpreter lock from the
    event loop answering requests: with them judging the first imports, 50 webhooks at once
    were acknowledged in a p99 of 311-520 ms, and of 233-307 ms with the consumer in a
    process of its own (``benchmarks/import_latency.py``, alternating runs, load 2.7-4.4).
    The child forks from multiprocessing's fork server, a process of one thread (forking
    the server's own process, which runs threads, is unsafe), and runs ``target(settings,
    idle, restarted)`` (``jobs/forking.py``: ``hyper-ls serve`` starts that server with
    the backend imported, so a consumer needs no imports of its own). When it dies
    (killed, out of memory) another is started after ``RESTART_DELAY``, ``restarted``: it
    re-enqueues what the database says is left, the jobs the dead one was running too, so
    no work is lost (the server re-enqueued it before the first).
    """

    RESTART_DELAY = 1.0
    STOP_TIMEOUT = 15.0
    """Seconds the child has to finish its running jobs on ``stop`` before it is killed
    (what it leaves is done again on the next start)."""

    def __init__(self, target: Callable[[Settings, Idle, bool], None], settings: Settings) -> None:
        self._target, self._settings = target, settings
        self._context = multiprocessing.get_context(START_METHOD)
        self.idle = SharedIdle()
        """Set while the server answers no request: the child's database calls wait for
        it (``RequestsFirst``)."""
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor = threading.Thread(target=self._supervise, name="consumer-supervisor")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        self._spawn(restarted=False)
        self._supervisor.start()

    def _spawn(self, restarted: bool) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self._process = self._context.Process(
                target=self._target,
                args=(self._settings, self.idle, restarted),
                name="hyper-ls-consumer",
                daemon=True,
            )
            self._process.start()
        log.info("queue consumer process %d started", self._process.pid)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            process = self._process
            process.join()
            if self._stopping.is_set():
                return
            log.warning(
                "queue consumer process %d exited with %s: starting another in %.0f s",
                process.pid,
                process.exitcode,
                self.RESTART_DELAY,
            )
            if not self._stopping.wait(self.RESTART_DELAY):
                self._spawn(restarted=True)

    def stop(self) -> None:
        """SIGTERM: the child stops its consumer gracefully; killed if it takes too long."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is None:
            return
        process.terminate()
        process.join(self.STOP_TIMEOUT)
        if process.exitcode is None:
            log.warning("queue consumer process %d did not stop: killed", process.pid)
            process.kill()
            process.join()
        if self._supervisor.is_alive():
            self._supervisor.join()
