"""Route-throughput benchmark: ``hyper-ls route`` on synthetic comparisons.

    python benchmarks/route_throughput.py [--n 100000] [--short] [--compare] [--seed 0]

Writes N comparisons to a temporary directory as it draws them (prompts of 10-80 words,
responses of 20-600 words from a 5,000-word vocabulary, half with a judge verdict run in
both orders; ``--short``: prompts of 5-40 words, responses of 10-150), then times the real
command line end to end (read, validate, featurize, score, select exactly floor(0.25 x N),
explain, write) in a child process. Reports comparisons per second; peak memory of the
whole process tree (the command and its worker processes, proportional set size sampled
every 50 ms) and the largest resident set of one process; and the CPU time the command
and its workers used (on a busy machine, comparisons per CPU-second x cores bounds what an
idle one would do). ``--compare`` also routes the file the in-memory way (``Router.route``
on every comparison at once, what ``route`` did before it streamed) and says whether the
two outputs are byte for byte the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hyper_ls_backend.eval.synthetic import zipf_text

SAMPLE_SECONDS = 0.05
IN_MEMORY = """
import json, sys
from hyper_ls_backend.core.dataset import read_comparisons
from hyper_ls_backend.priors import load_default_router
comparisons = read_comparisons(sys.argv[1], drop_labels=True)
decisions = load_default_router().route(comparisons, float(sys.argv[3]), n_jobs=2).decisions
with open(sys.argv[2], "w", encoding="utf-8") as handle:
    for decision in decisions:
        handle.write(json.dumps(decision.to_record(), ensure_ascii=False) + "\\n")
"""


@dataclass(frozen=True)
class Lengths:
    prompt: tuple[int, int]
    response: tuple[int, int]


FULL = Lengths(prompt=(10, 80), response=(20, 600))
SHORT = Lengths(prompt=(5, 40), response=(10, 150))


def synthetic_comparisons(n: int, seed: int, lengths: Lengths = FULL) -> Iterator[dict]:
    rng = np.random.default_rng(seed)
    for i in range(n):
        judged = rng.random() < 0.5
        yield {
            "id": f"syn-{i}",
            "prompt": zipf_text(rng, *lengths.prompt),
            "response_a": zipf_text(rng, *lengths.response),
            "response_b": zipf_text(rng, *lengths.response),
            "judge": {
                "label": str(rng.choice(["A", "B", "tie"])),
                "consistent": bool(rng.random() < 0.85),
            }
            if judged
            else None,
            "meta": {"group": f"g{i // 4}", "category": str(rng.choice(["math", "writing"]))},
        }


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants, each page shared by k of them
    counted 1/k in each (PSS: forked workers share the parent's pages)."""
    total, stack = 0, [pid]
    while stack:
        process = stack.pop()
        try:
            rollup = Path(f"/proc/{process}/smaps_rollup").read_text()
            children = Path(f"/proc/{process}/task/{process}/children").read_text().split()
        except OSError:  # it ended between two reads
            continue
        pss = next((line for line in rollup.splitlines() if line.startswith("Pss:")), None)
        total += int(pss.split()[1]) * 1024 if pss else 0
        stack.extend(int(child) for child in children)
    return total


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float
    """User and system time of the command and its workers: what an idle machine's cores
    would share (``load_1min`` says how busy this one was)."""
    peak_tree_mb: float
    peak_process_mb: float


def timed(command: list[str]) -> Run:
    """Run ``command`` to the end, sampling its process tree's memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    child = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(SAMPLE_SECONDS):
            peak = max(peak, tree_rss(child.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    code = child.wait()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    if code:
        raise SystemExit(f"{command[0]} exited with {code}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Run(elapsed, cpu, peak / 1e6, after.ru_maxrss * 1024 / 1e6)  # largest so far


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--short", action="store_true", help="shorter texts (see above)")
    parser.add_argument("--compare", action="store_true", help="also route in memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        with source.open("w") as handle:
            for row in synthetic_comparisons(args.n, args.seed, SHORT if args.short else FULL):
                handle.write(json.dumps(row) + "\n")
        load_before = os.getloadavg()[0]
        hyper_ls = Path(sys.executable).with_name("hyper-ls")
        budget = str(args.budget)
        run = timed([str(hyper_ls), "route", str(source), "--budget", budget, "--out", str(out)])
        load_after = os.getloadavg()[0]
        result = {
            "benchmark": "route_throughput",
            "n": args.n,
            "texts": "short" if args.short else "full",
            "routed": sum(1 for _ in out.open()),
            "seconds": round(run.seconds, 2),
            "comparisons_per_second": round(args.n / run.seconds),
            "cpu_seconds": round(run.cpu_seconds, 1),
            "comparisons_per_cpu_second": round(args.n / run.cpu_seconds),
            "peak_rss_tree_mb": round(run.peak_tree_mb),
            "peak_rss_largest_process_mb": round(run.peak_process_mb),
            "input_mb": round(source.stat().st_size / 1e6, 1),
            "load_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        }
        if args.compare:
            memory_out = Path(tmp) / "in_memory.jsonl"
            command = [sys.executable, "-c", IN_MEMORY, str(source), str(memory_out), budget]
            reference = timed(command)
            result["in_memory"] = {
                "seconds": round(reference.seconds, 2),
                "cpu_seconds": round(reference.cpu_seconds, 1),
                "peak_rss_tree_mb": round(reference.peak_tree_mb),
                "byte_identical": memory_out.read_bytes() == out.read_bytes(),
            }
    result |= {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
