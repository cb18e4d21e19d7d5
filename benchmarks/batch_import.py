"""Benchmark: one big import judged through the (local) Message Batches API, with a crash.

    python benchmarks/batch_import.py [--tasks 2000] [--batch-s 30] [--kill-after-polls 3]
        [--judge-token]

Runs the real backend (``hyper-ls serve``, SQLite state and queue, ``HYPER_JUDGE_BATCH``
at its default ``auto``) against a real Label Studio 1.23.2 (``make label-studio``) and the
test suite's fake Anthropic API, whose Message Batches end ``--batch-s`` seconds after
they are created. ``--tasks`` tasks are imported with one SDK call; once the backend has
polled its batch ``--kill-after-polls`` times it is killed (SIGKILL) and started again on
the same MODEL_DIR. Reported: the time to send the batch, when the batch ended, when every
task was decided and written back (from the import call), the batches sent (must be 1)
and judge calls made outside them (must be 0), and ``/status``'s spend: the batch price
against the listed price. ``--judge-token``: the judge gets a Label Studio user and token of
its own (``LABEL_STUDIO_JUDGE_API_KEY``), so its annotations are written in bulk.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's fakes and harnesses

from e2e.backend import BackendProcess, ScriptedJudge, comparison_data  # noqa: E402
from e2e.label_studio import run_label_studio  # noqa: E402
from label_studio_sdk import LabelStudio  # noqa: E402
from lm.fake_llm_server import FakeLLMServer  # noqa: E402

from hyper_ls_backend.ls import configs  # noqa: E402
from hyper_ls_backend.ls.setup import connect_project  # noqa: E402
from hyper_ls_backend.settings import Settings  # noqa: E402

CONFIG = configs.read("preference_5point")


def decisions(backend: BackendProcess) -> tuple[int, int]:
    ((decided, written),) = backend.query("select count(*), count(written_at) from decisions")
    return decided, written


def wait(condition: Callable[[], Any], what: str, timeout: float = 3600.0) -> Any:
    """``condition()``'s first value that is neither None nor False."""
    deadline = time.monotonic() + timeout
    while (value := condition()) is None or value is False:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f} s")
        time.sleep(0.2)
    return value


def run(
    n_tasks: int,
    batch_s: float,
    kill_after: int,
    server: FakeLLMServer,
    work: Path,
    judge_token: bool,
) -> dict:
    server.batch_seconds = batch_s
    with run_label_studio(timeout=900) as ls:  # a loaded machine starts it slowly
        env = {
            "ANTHROPIC_API_KEY": "sk-ant-bench",
            "HYPER_JUDGE_BASE_URL": server.base_url,
            "HYPER_TAGGER": "false",
            "HYPER_JUDGE_BATCH_POLL": "1",
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.api_key,
        }
        if judge_token:
            env["LABEL_STUDIO_JUDGE_API_KEY"] = ls.create_user("judge@example.com")
        backend = BackendProcess(env, work / "model", work / "backend.log").start()
        try:
            settings = Settings(label_studio_url=ls.url, label_studio_api_key=ls.api_key)
            project = connect_project(settings, backend.url, None, "batch benchmark", CONFIG)
            client = LabelStudio(base_url=ls.url, api_key=ls.api_key, timeout=300)
            data = [{"data": comparison_data(f"t{i}")} for i in range(n_tasks)]
            started = time.perf_counter()
            client.projects.import_tasks(id=project, request=data)
            imported = time.perf_counter() - started
            batch = wait(lambda: next(iter(server.batches.values()), None), "batch")
            sent = time.perf_counter() - started
            wait(lambda: batch.retrieved >= kill_after, "polls")
            backend.kill()
            killed = time.perf_counter() - started
            backend.start()
            restarted = time.perf_counter() - started
            wait(lambda: decisions(backend)[0] >= n_tasks, "decisions")
            routed = time.perf_counter() - started
            wait(lambda: decisions(backend)[1] >= n_tasks, "write-backs")
            written = time.perf_counter() - started
            ended = (batch.ended_at.timestamp() - batch.created_at.timestamp()) + sent
            _, status = backend.request("GET", f"/status?project={project}")
        finally:
            backend.stop()
    batches = status["batches"]
    return {
        "tasks": n_tasks,
        "judge_token": judge_token,
        "batch_s": batch_s,
        "import_call_s": round(imported, 1),
        "batch_sent_s": round(sent, 1),
        "killed_at_s": round(killed, 1),
        "restarted_at_s": round(restarted, 1),
        "batch_ended_s": round(ended, 1),
        "all_routed_s": round(routed, 1),
        "all_written_back_s": round(written, 1),
        "routed_after_batch_end_s": round(routed - ended, 1),
        "batches_sent": len(server.batches),
        "batched_requests": server.batched_requests(),
        "calls_outside_batches": sum(1 for r in server.requests if r.path == "/v1/messages"),
        "batch_calls": batches["calls"],
        "batch_cost_usd": round(batches["cost_usd"], 4),
        "list_cost_usd": round(batches["list_cost_usd"], 4),
        "spend_cost_usd": round(status["spend"]["cost_usd"], 4),
        "cost_per_1000_comparisons_usd": round(status["spend"]["cost_per_1000_comparisons_usd"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--batch-s", type=float, default=30.0, help="a batch's processing time")
    parser.add_argument("--kill-after-polls", type=int, default=3)
    parser.add_argument(
        "--judge-token", action="store_true", help="LABEL_STUDIO_JUDGE_API_KEY for the judge"
    )
    args = parser.parse_args()
    server = FakeLLMServer()
    server.responder = ScriptedJudge(slow_s=30.0)
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report = run(
                args.tasks,
                args.batch_s,
                args.kill_after_polls,
                server,
                Path(tmp),
                args.judge_token,
            )
    finally:
        server.stop()
    print(json.dumps({"benchmark": "batch_import", **report}, indent=2))


if __name__ == "__main__":
    main()
