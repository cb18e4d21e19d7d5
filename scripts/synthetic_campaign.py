"""Write synthetic labelled comparisons (``hyper_ls_backend/eval/synthetic.py``), one file per
seed, for ``hyper-ls simulate --online --prior default DIR/synthetic_{seed}.jsonl``.

    .venv/bin/python scripts/synthetic_campaign.py --n 3000 --seeds 10 --out-dir /tmp/synthetic

A stress test with a stated generative process, not data: see that module's docstring.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hyper_ls_backend.core.dataset import write_jsonl
from hyper_ls_backend.eval.synthetic import synthetic_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="comparisons per seed")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0 .. SEEDS-1")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        path = args.out_dir / f"synthetic_{seed}.jsonl"
        write_jsonl(path, synthetic_records(args.n, seed))
        print(path)


if __name__ == "__main__":
    main()
