"""The queue consumer's CPU per task judged: what the backend itself spends beside the judge.

    python benchmarks/consumer_cpu.py [--tasks 1000] [--judge-ms 300] [--concurrency 64]

The backend's model is built as the server builds it (SQLite in a temporary directory, its
queue's threads in this process, what was built before them kept out of the garbage
collector's full collections as in the consumer process) and given one ``TASKS_CREATED``
of ``--tasks`` tasks; the judge is the test suite's fake Anthropic server answering after
``--judge-ms``, in a process of its own so that its CPU is not counted. Timed until every
task has a decision (the write-back to Label Studio is not part of it: ``import_latency.py``
measures that); reports the wall time, this process's CPU time per task and the
judge-bound time (tasks x 2 orders x judge time / concurrency). On 2 cores the consumer's
CPU per task bounds how fast an import can go however many calls the judge takes at once.

``--by-step`` also reports the CPU per task of each of the consumer's main steps (``STEPS``:
the CPU time of the threads while in them, ``time.thread_time``, so a thread waiting for the
interpreter lock or a reply counts nothing), and the rest.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's fakes and harnesses

from server.harness import CONFIG_5POINT, judge_settings, task, tasks_created  # noqa: E402

from hyper_ls_backend.jobs.pipeline import Pipeline  # noqa: E402
from hyper_ls_backend.lm.anthropic_api import AnthropicTransport  # noqa: E402
from hyper_ls_backend.server.model import HyperModel, start_up_objects_frozen  # noqa: E402
from hyper_ls_backend.server.schemas import WebhookEvent  # noqa: E402
from hyper_ls_backend.settings import Settings  # noqa: E402
from hyper_ls_backend.store import Store  # noqa: E402

STEPS: dict[str, tuple[type, str]] = {
    "judge_calls": (AnthropicTransport, "complete"),  # the SDK's request and its answer
    "judge_outputs_stored": (Store, "save_judge_output"),
    "comparisons_stored": (Store, "save_comparison"),
    "decided_and_settled": (Pipeline, "_decide_judged"),
}
"""Steps of the consumer timed by ``--by-step``: none runs inside another."""


class StepClock:
    """The CPU time threads spend in each of ``STEPS``' methods, from ``install()`` on."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self._lock = threading.Lock()

    def install(self) -> None:
        for step, (owner, name) in STEPS.items():
            setattr(owner, name, self._timed(step, getattr(owner, name)))

    def _timed(self, step: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with self._lock:
                    self.seconds[step] += spent

        return timed


def serve_judge(delay_s: float, base_url: multiprocessing.Queue) -> None:
    """The fake judge, until the benchmark's process ends it."""
    from lm.fake_llm_server import FakeLLMServer
    from server.harness import ScriptedJudge

    server = FakeLLMServer()
    server.responder = ScriptedJudge(delay_s)
    server.start()
    base_url.put(server.base_url)
    while True:
        time.sleep(3600)


@contextmanager
def judge_process(delay_s: float) -> Iterator[str]:
    """The fake judge answering after ``delay_s``, in a process of its own so that its CPU
    is not counted; yields its base URL."""
    spawn = multiprocessing.get_context("spawn")
    base_url = spawn.Queue()
    judge = spawn.Process(target=serve_judge, args=(delay_s, base_url), daemon=True)
    judge.start()
    try:
        yield base_url.get(timeout=60)
    finally:
        judge.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--judge-ms", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--by-step", action="store_true", help="CPU per task of each step")
    args = parser.parse_args()
    delay_s = args.judge_ms / 1000

    with judge_process(delay_s) as base_url:
        settings = judge_settings(
            Path(tempfile.mkdtemp()),
            base_url,
            threads=Settings().threads,  # the server's default, not the tests' 4
            hyper_judge_concurrency=args.concurrency,
            hyper_judge_timeout=60,
        )
        model = HyperModel.build(settings)
        with start_up_objects_frozen():  # as the consumer process does (``consume``)
            model.start()
            model.setup(1, CONFIG_5POINT, None)
            clock = StepClock()
            if args.by_step:
                clock.install()
            event = tasks_created([task(i) for i in range(1, args.tasks + 1)], project=1)
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            model.webhook(WebhookEvent.model_validate(event))
            while sum(model.store.decision_counts().values()) < args.tasks:
                time.sleep(0.1)
            wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
            model.stop()
    report = {
        "benchmark": "consumer_cpu",
        "tasks": args.tasks,
        "judge_ms": args.judge_ms,
        "concurrency": args.concurrency,
        "all_decided_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cpu_ms_per_task": round(1000 * cpu / args.tasks, 1),
        "judge_bound_s": round(args.tasks * 2 * delay_s / args.concurrency, 1),
    }
    if args.by_step:
        per_task = {step: 1000 * spent / args.tasks for step, spent in clock.seconds.items()}
        per_task["rest"] = 1000 * cpu / args.tasks - sum(per_task.values())
        report["cpu_ms_per_task_by_step"] = {s: round(ms, 2) for s, ms in per_task.items()}
    report |= {
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
