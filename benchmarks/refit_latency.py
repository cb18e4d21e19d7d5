"""Refit under load: does a background refit slow ``/webhook`` and ``/predict`` down?

    python benchmarks/refit_latency.py [--labels 5000] [--probe-s 10] [--seed 0]

Runs the real backend (``hyper-ls serve``, SQLite state and queue) as a subprocess, its judge
a local fake Anthropic Messages API (the test suite's scripted judge, answering at once).
Everything goes through the HTTP protocol, as from Label Studio:

1. imports ``--labels`` tasks (``TASKS_CREATED`` webhooks of 100) and waits until all are
   routed;
2. sends one human annotation per task (``ANNOTATION_CREATED``), wrong for the judge on
   about a third;
3. baseline: for ``--probe-s`` seconds, one client alternates a ``/predict`` of one routed
   task and an ``ANNOTATION_UPDATED`` webhook (the cheap calls Label Studio makes while
   annotators work) and records each latency;
4. sends ``START_TRAINING`` and probes the same way until the refit has finished (the
   backend logs it), reporting the refit's wall time and the latencies during it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's fakes and harnesses

from e2e.backend import BackendProcess, comparison_data, start_fake_judge  # noqa: E402

from hyper_ls_backend.ls import configs  # noqa: E402

CONFIG = configs.read("preference_5point")
PROJECT = 1
BATCH = 100
PLANS = ("a-clear", "a-slight", "b-clear", "tie", "biased")
JUDGE_SAYS = {"a-clear": "A", "a-slight": "A", "b-clear": "B", "tie": "tie", "biased": "tie"}
CHOICE = {"A": "A-is-clearly-better", "B": "B-is-clearly-better", "tie": "Tie"}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "calls": len(latencies),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "max_ms": round(1000 * max(latencies), 1),
    }


def annotation(annotation_id: int, task_id: int, choice: str) -> dict[str, Any]:
    return {
        "id": annotation_id,
        "task": task_id,
        "result": [
            {
                "from_name": "preference",
                "to_name": "prompt",
                "type": "choices",
                "value": {"choices": [choice]},
            }
        ],
        "completed_by": 2,
        "was_cancelled": False,
    }


def decided(backend: BackendProcess) -> int:
    ((count,),) = backend.query("select count(*) from decisions")
    return count


def refits_logged(backend: BackendProcess) -> int:
    return backend.log.read_text(errors="replace").count(f"project {PROJECT}: refit on")


def call(backend: BackendProcess, path: str, body: Any) -> float:
    started = time.perf_counter()
    status, answer = backend.request("POST", path, body)
    if status != 200:
        raise RuntimeError(f"{path} answered {status}: {answer}")
    return time.perf_counter() - started


def probe(
    backend: BackendProcess, tasks: list[dict[str, Any]], until: Any, rng: random.Random
) -> dict[str, list[float]]:
    """Alternate /predict and /webhook calls until ``until()`` is true."""
    latencies: dict[str, list[float]] = {"predict": [], "webhook": []}
    while not until():
        task = rng.choice(tasks)
        body = {"tasks": [task], "project": f"{PROJECT}.0", "label_config": CONFIG}
        latencies["predict"].append(call(backend, "/predict", body))
        event = {
            "action": "ANNOTATION_UPDATED",
            "project": {"id": PROJECT},
            "task": {"id": task["id"]},
            "annotation": annotation(10**6 + task["id"], task["id"], "Tie"),
        }
        latencies["webhook"].append(call(backend, "/webhook", event))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=5000)
    parser.add_argument("--probe-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    server, _ = start_fake_judge(slow_s=30.0)
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-bench",
        "HYPER_JUDGE_BASE_URL": server.base_url,
        "HYPER_TAGGER": "false",
        "HYPER_REFIT_EVERY": str(10 * args.labels),
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            backend = BackendProcess(env, Path(tmp) / "model", Path(tmp) / "backend.log").start()
            try:
                report = run(backend, args, rng)
            finally:
                backend.stop()
    finally:
        server.stop()
    report |= {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))}
    print(json.dumps(report))


def run(backend: BackendProcess, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    call(backend, "/setup", {"project": f"{PROJECT}.0", "schema": CONFIG})
    plans = [rng.choice(PLANS) for _ in range(args.labels)]
    tasks = [{"id": i + 1, "data": comparison_data(f"r{i}", plan)} for i, plan in enumerate(plans)]
    started = time.perf_counter()
    for start in range(0, len(tasks), BATCH):
        event = {
            "action": "TASKS_CREATED",
            "project": {"id": PROJECT},
            "tasks": tasks[start : start + BATCH],
        }
        call(backend, "/webhook", event)
    while decided(backend) < len(tasks):
        time.sleep(1.0)
    routed_s = time.perf_counter() - started
    for task, plan in zip(tasks, plans, strict=True):
        judged = JUDGE_SAYS[plan]
        wrong = rng.random() < 1 / 3
        human = rng.choice([x for x in CHOICE if x != judged]) if wrong else judged
        event = {
            "action": "ANNOTATION_CREATED",
            "project": {"id": PROJECT},
            "task": {"id": task["id"]},
            "annotation": annotation(task["id"], task["id"], CHOICE[human]),
        }
        call(backend, "/webhook", event)
    deadline = time.perf_counter() + args.probe_s
    baseline = probe(backend, tasks, lambda: time.perf_counter() > deadline, rng)
    call(backend, "/webhook", {"action": "START_TRAINING", "project": {"id": PROJECT}})
    triggered = time.perf_counter()
    during = probe(backend, tasks, lambda: refits_logged(backend) > 0, rng)
    return {
        "benchmark": "refit_latency",
        "labels": args.labels,
        "import_routed_s": round(routed_s, 1),
        "refit_wall_s": round(time.perf_counter() - triggered, 1),
        "baseline": {name: summary(values) for name, values in baseline.items()},
        "during_refit": {name: summary(values) for name, values in during.items()},
    }


if __name__ == "__main__":
    main()
