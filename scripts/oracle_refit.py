"""How much could a refit learn from a whole campaign? The ceiling for online refitting.

    python scripts/oracle_refit.py ../shared/data/mtbench_human_gpt4.jsonl --split models

Per seed, splits the data as ``hyper-ls simulate --online --split`` does, fits the prior
on its side, then gives the backend's ``Refitter`` every human label of the campaign side at
once (no routing, no selection, propensity 1) and prints what the refit measured: the
cross-validated AUC of its judge-error scores against the recalibrated prior's, and whether
it would be adopted. If even this refit cannot beat the prior, no online refit can.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hyper_ls_backend.core.dataset import read_comparisons
from hyper_ls_backend.core.learning import Refitter
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.strategies import make_strategy
from hyper_ls_backend.eval.campaign import SPLITS, split_for_replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--split", choices=SPLITS, default="groups")
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    comparisons = read_comparisons(args.data)
    rows = []
    for seed in range(args.seeds):
        prior_data, stream = split_for_replay(comparisons, args.split, seed)
        prior = Router(make_strategy("judge-error", seed=seed)).fit(prior_data)
        refitter = Refitter(seed=seed)
        refitter.observe(stream, propensity=1.0)
        refitter.see(stream)
        outcome = refitter.refit(prior)
        quality = outcome.quality
        rows.append(
            {
                "seed": seed,
                "campaign": len(stream),
                "refit_auc": quality.get("held_out_auc"),
                "prior_auc": quality.get("prior_held_out_auc"),
                "adopted": outcome.adopted,
            }
        )
        print(json.dumps(rows[-1]))
    measured = [r for r in rows if r["refit_auc"] is not None]
    summary = {
        "split": args.split,
        "seeds": args.seeds,
        "mean_refit_auc": round(float(np.mean([r["refit_auc"] for r in measured])), 3),
        "mean_prior_auc": round(float(np.mean([r["prior_auc"] for r in measured])), 3),
        "adopted": sum(r["adopted"] for r in rows),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
