"""The backend's judge client alone: its CPU per call, and how long the fake judge takes.

    python benchmarks/judge_calls.py [--calls 2000] [--judge-ms 300] [--concurrency 64]

Sends ``--calls`` judge requests through the backend's ``AnthropicTransport`` (the real
``anthropic`` SDK) from ``--concurrency`` threads to the test suite's fake Anthropic server
answering after ``--judge-ms`` (in a process of its own, as the import benchmarks' judge is
in theirs), and reports this process's CPU per call, each call's latency (p50, p99, max)
and the wall time against the bound (calls x judge time / concurrency). The CPU per call is
what the SDK and its HTTP client cost the queue consumer for each order judged; the latency
says whether the fake judge answers in the time the import benchmarks assume.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's fakes and harnesses

from consumer_cpu import judge_process  # noqa: E402
from server.harness import task  # noqa: E402

from hyper_ls_backend.core.comparison import Comparison  # noqa: E402
from hyper_ls_backend.lm.anthropic_api import AnthropicTransport  # noqa: E402
from hyper_ls_backend.lm.prompts import judge_request  # noqa: E402

WARM_UP_CALLS = 64
"""Sent first and not timed: the connections opened, the SDK's first-call work done."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--judge-ms", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    delay_s = args.judge_ms / 1000

    with judge_process(delay_s) as base_url:
        transport = AnthropicTransport(api_key="sk-ant-bench", base_url=base_url)
        comparison = Comparison(id="1", **task(1)["data"])
        request = judge_request(comparison, swapped=False)
        latencies: list[float] = []

        def call(_: int) -> None:
            started = time.perf_counter()
            transport.complete(request)
            latencies.append(time.perf_counter() - started)

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(call, range(WARM_UP_CALLS)))
            latencies.clear()
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            list(pool.map(call, range(args.calls)))
            wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    latencies.sort()
    report = {
        "benchmark": "judge_calls",
        "calls": args.calls,
        "judge_ms": args.judge_ms,
        "concurrency": args.concurrency,
        "cpu_ms_per_call": round(1000 * cpu / args.calls, 2),
        "latency_p50_ms": round(1000 * statistics.median(latencies)),
        "latency_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))]),
        "latency_max_ms": round(1000 * latencies[-1]),
        "wall_s": round(wall, 1),
        "bound_s": round(args.calls * delay_s / args.concurrency, 1),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
