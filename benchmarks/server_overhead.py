"""What answering a webhook costs the server before any work of ours: the HTTP stack and
the garbage collector.

    python benchmarks/server_overhead.py [--concurrent 50] [--bursts 5]

1. http: an empty FastAPI handler taking the backend's ``WebhookEvent`` runs under uvicorn
   with each HTTP parser (``--http h11``, ``--http httptools``), a process of its own; the
   client of ``import_latency.py`` posts ``--concurrent`` ``TASKS_CREATED`` of 20 tasks at
   once, ``--bursts`` times. Reports p50/p99 of each burst and the server's CPU per
   request (``/proc``, in clock ticks of 10 ms: 0.2 ms a request at 50): the floor under
   the webhook figures of ``import_latency.py``.
2. gc: the backend's model and app built as ``hyper-ls serve`` builds them (no judge key,
   SQLite in a temporary directory); reports the objects the collector tracks and how long
   a full collection takes with them, and with them frozen (``gc.freeze``, as the server
   does while it runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from import_latency import latency_summary, load, webhooks_at_once  # noqa: E402
from processes import free_port  # noqa: E402

from hyper_ls_backend.server.schemas import WebhookEvent  # noqa: E402 (FastAPI reads it)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def empty_app() -> Any:
    """The uvicorn factory of the empty handler (``--serve``)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/webhook")
    async def webhook(event: WebhookEvent) -> dict[str, str]:
        return {"status": "ignored"}

    return app


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def http_floor(parser: str, concurrent: int, bursts: int) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", parser, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/webhook"

    def post(event: dict[str, Any]) -> int:
        request = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST")
        request.add_header("content-type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                post({"action": "PROJECT_UPDATED", "project": {"id": 1}})
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        runs = []
        for _ in range(bursts):
            cpu = cpu_seconds(server.pid)
            latencies = webhooks_at_once(post, concurrent)
            spent = cpu_seconds(server.pid) - cpu
            cpu_ms = round(1000 * spent / concurrent, 1)
            runs.append(latency_summary(latencies) | {"cpu_ms_per_request": cpu_ms})
            time.sleep(1)
    finally:
        server.terminate()
        server.wait()
    return {"http": parser, "load": load(), "bursts": runs}


def gc_cost() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"MODEL_DIR": tmp, "QUEUE_CONSUMER": "threads", "THREADS": "0"})
        from hyper_ls_backend.server.app import create_app
        from hyper_ls_backend.server.model import HyperModel
        from hyper_ls_backend.settings import Settings

        settings = Settings()
        model = HyperModel.build(settings)
        create_app(settings, model)
        tracked = len(gc.get_objects())
        full = timed_collections()
        gc.freeze()
        frozen = timed_collections()
        gc.unfreeze()
        model.store.engine.dispose()
    return {
        "tracked_objects": tracked,
        "full_collection_ms": full,
        "full_collection_frozen_ms": frozen,
    }


def timed_collections(times: int = 3) -> float:
    """The median of ``times`` full collections, in ms."""
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        gc.collect()
        spent.append(1000 * (time.perf_counter() - started))
    return round(statistics.median(spent), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--serve", choices=["h11", "httptools"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:  # the empty app's own process
        import uvicorn

        uvicorn.run(empty_app, factory=True, port=args.port, http=args.serve, log_level="info")
        return
    report = {
        "benchmark": "server_overhead",
        "http": [http_floor(p, args.concurrent, args.bursts) for p in ("h11", "httptools")],
        "gc": gc_cost(),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
