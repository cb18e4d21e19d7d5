"""Import benchmark: webhook acknowledge latency, and time from import to all-routed.

    python benchmarks/import_latency.py [--tasks 1000] [--judge-ms 300] [--concurrent 50]

Runs the real backend (``hyper-ls serve``, SQLite state and queue) as a subprocess with the
judge pointed at a local fake Anthropic Messages API that answers after ``--judge-ms``
(the test suite's scripted judge, ``tests/e2e/backend.py``), then:

1. webhook latency: ``--concurrent`` clients each POST one ``TASKS_CREATED`` of 20 tasks to
   ``/webhook`` at the same moment; reports p50/p99/max of the acknowledgements;
2. import to all-routed: starts a real Label Studio 1.23.2 (``make label-studio``), connects
   the backend with ``hyper-ls connect``'s code, imports ``--tasks`` tasks through the SDK,
   and times until every task is routed and until every decision is written back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's fakes and harnesses

from e2e.backend import BackendProcess, comparison_data, start_fake_judge  # noqa: E402
from e2e.label_studio import run_label_studio  # noqa: E402
from label_studio_sdk import LabelStudio  # noqa: E402

from hyper_ls_backend.ls import configs  # noqa: E402
from hyper_ls_backend.ls.setup import connect_project  # noqa: E402
from hyper_ls_backend.settings import Settings  # noqa: E402

CONFIG = configs.read("preference_5point")
TASKS_PER_WEBHOOK = 20


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def decisions(backend: BackendProcess) -> tuple[int, int]:
    """(decided, written back) counted from the backend's own database."""
    ((decided, written),) = backend.query("select count(*), count(written_at) from decisions")
    return decided, written


def webhook_latency(judge_url: str, concurrent: int, work: Path) -> dict[str, float]:
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-bench",
        "HYPER_JUDGE_BASE_URL": judge_url,
        "HYPER_TAGGER": "false",
    }
    backend = BackendProcess(env, work / "webhook-model", work / "webhook.log").start()
    try:
        setup = {"project": "1.0", "schema": CONFIG}
        assert backend.request("POST", "/setup", setup)[0] == 200
        barrier = threading.Barrier(concurrent)
        latencies: list[float] = []

        def post(client: int) -> None:
            tasks = [
                {"id": client * TASKS_PER_WEBHOOK + i, "data": comparison_data(f"w{client}-{i}")}
                for i in range(TASKS_PER_WEBHOOK)
            ]
            event = {"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": tasks}
            barrier.wait()
            started = time.perf_counter()
            status, _ = backend.request("POST", "/webhook", event)
            latencies.append(time.perf_counter() - started)
            assert status == 200, status

        threads = [threading.Thread(target=post, args=(c,)) for c in range(concurrent)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        backend.stop()
    return {
        "webhooks": concurrent,
        "tasks_per_webhook": TASKS_PER_WEBHOOK,
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "max_ms": round(1000 * max(latencies), 1),
    }


def import_to_routed(judge_url: str, n_tasks: int, work: Path) -> dict[str, float]:
    with run_label_studio() as ls:
        env = {
            "ANTHROPIC_API_KEY": "sk-ant-bench",
            "HYPER_JUDGE_BASE_URL": judge_url,
            "HYPER_TAGGER": "false",
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.api_key,
        }
        backend = BackendProcess(env, work / "import-model", work / "import.log").start()
        try:
            settings = Settings(label_studio_url=ls.url, label_studio_api_key=ls.api_key)
            project = connect_project(settings, backend.url, None, "benchmark", CONFIG)
            client = LabelStudio(base_url=ls.url, api_key=ls.api_key, timeout=120)
            data = [{"data": comparison_data(f"t{i}")} for i in range(n_tasks)]
            started = time.perf_counter()
            client.projects.import_tasks(id=project, request=data)
            imported = time.perf_counter() - started
            routed_at = written_at = None
            while written_at is None:
                decided, written = decisions(backend)
                now = time.perf_counter() - started
                if routed_at is None and decided >= n_tasks:
                    routed_at = now
                if written >= n_tasks:
                    written_at = now
                time.sleep(0.5)
        finally:
            backend.stop()
    return {
        "tasks": n_tasks,
        "import_call_s": round(imported, 1),
        "all_routed_s": round(routed_at, 1),
        "all_written_back_s": round(written_at, 1),
        "routed_per_s": round(n_tasks / routed_at, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--judge-ms", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--skip-import", action="store_true", help="webhook latency only")
    args = parser.parse_args()
    server, judge = start_fake_judge(slow_s=30.0)
    judge.delay_s = args.judge_ms / 1000
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            report = {
                "benchmark": "import_latency",
                "judge_ms": args.judge_ms,
                "threads": int(os.environ.get("THREADS", Settings().threads)),
                "webhook": webhook_latency(server.base_url, args.concurrent, work),
            }
            if not args.skip_import:
                report["import"] = import_to_routed(server.base_url, args.tasks, work)
    finally:
        server.stop()
    report |= {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
