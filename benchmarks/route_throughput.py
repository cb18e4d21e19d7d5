"""Route-throughput benchmark: ``hyper-ls route`` on synthetic comparisons.

    python benchmarks/route_throughput.py [--n 100000] [--seed 0]

Generates N comparisons (prompts of 10-80 words, responses of 20-600 words drawn from a
5,000-word vocabulary, half with a judge verdict run in both orders), then times the real
command line end to end (read, featurize, score, select, explain, write) in a child process
and reports comparisons per second and the child's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hyper_ls_backend.eval.synthetic import zipf_text


def synthetic_comparisons(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)

    def text(low: int, high: int) -> str:
        return zipf_text(rng, low, high)

    rows = []
    for i in range(n):
        judged = rng.random() < 0.5
        rows.append(
            {
                "id": f"syn-{i}",
                "prompt": text(10, 80),
                "response_a": text(20, 600),
                "response_b": text(20, 600),
                "judge": {
                    "label": str(rng.choice(["A", "B", "tie"])),
                    "consistent": bool(rng.random() < 0.85),
                }
                if judged
                else None,
                "meta": {"group": f"g{i // 4}", "category": str(rng.choice(["math", "writing"]))},
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=0.25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        with source.open("w") as handle:
            for row in synthetic_comparisons(args.n, args.seed):
                handle.write(json.dumps(row) + "\n")
        hyper_ls = Path(sys.executable).with_name("hyper-ls")
        started = time.perf_counter()
        subprocess.run(
            [str(hyper_ls), "route", str(source), "--budget", str(args.budget), "--out", str(out)],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        routed = sum(1 for _ in out.open())
        input_mb = source.stat().st_size / 1e6
    print(
        json.dumps(
            {
                "benchmark": "route_throughput",
                "n": args.n,
                "routed": routed,
                "seconds": round(elapsed, 2),
                "comparisons_per_second": round(args.n / elapsed),
                "peak_rss_mb": round(peak_mb),
                "input_mb": round(input_mb, 1),
                "python": platform.python_version(),
                "cpus": len(__import__("os").sched_getaffinity(0)),
            }
        )
    )


if __name__ == "__main__":
    main()
