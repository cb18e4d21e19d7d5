"""Refit benchmark: how long the backend's refit takes for N labelled comparisons.

    python benchmarks/refit_time.py [--n 5000] [--seed 0]

Builds N synthetic labelled comparisons (the route benchmark's texts, a judge verdict run
in both orders, one human vote that disagrees with the judge on about a third), then times
what a refit job does: the weighted trial refit on three quarters of the labelled groups, its
held-out measurement against the shipped prior, and the full refit when adopted
(``core/learning.py``), all on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from route_throughput import synthetic_comparisons

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.learning import Refitter
from hyper_ls_backend.priors import load_default_router


def labelled(n: int, seed: int) -> list[Comparison]:
    rng = np.random.default_rng(seed)
    records = synthetic_comparisons(n, seed)
    for record in records:
        record["judge"] = {
            "label": str(rng.choice(["A", "B", "tie"])),
            "consistent": bool(rng.random() < 0.85),
        }
        wrong = rng.random() < (0.55 if not record["judge"]["consistent"] else 0.28)
        record["human"] = [
            str(rng.choice([x for x in ("A", "B", "tie") if x != record["judge"]["label"]]))
            if wrong
            else record["judge"]["label"]
        ]
    return [Comparison.model_validate(r) for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    comparisons = labelled(args.n, args.seed)
    prior = load_default_router()
    refitter = Refitter()
    refitter.observe(comparisons, propensity=1.0)
    refitter.see(comparisons)
    started = time.perf_counter()
    outcome = refitter.refit(prior)
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "benchmark": "refit_time",
                "labelled": args.n,
                "seconds": round(elapsed, 2),
                "adopted": outcome.adopted,
                "quality": outcome.quality,
                "python": platform.python_version(),
                "cpus": len(os.sched_getaffinity(0)),
            }
        )
    )


if __name__ == "__main__":
    main()
