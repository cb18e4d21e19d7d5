"""How well each preference model predicts held-out human labels, by grouped cross-validation.

``python -m hyper_ls_backend.eval.preference DATA.jsonl ... [--synthetic] --report OUT.json``

For every seed the comparisons are split into folds by ``meta.group``; each model is fitted
on the other folds' first human votes and predicts the held-out fold. Accuracy is over
held-out comparisons with a decisive reference label (``gold``, default the human
majority), a zero margin counting half; pooled over folds, each comparison is predicted
once per seed, and accuracy is averaged over seeds. Intervals are 95% bootstraps over
groups, for each model's accuracy and for its paired difference to Bradley-Terry.

``cyclic_comparisons`` is the synthetic set with a stated cyclic structure: five response
styles in a regular tournament (style i beats styles i+1 and i+2 mod 5), so every style
wins exactly half of its match-ups and no scalar reward can rank them; a Bradley-Terry
model fitted to it is a coin flip, while a single GPM block (styles at angles 2 pi i / 5)
orders every pair.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.dataset import read_comparisons
from hyper_ls_backend.core.preference import (
    BradleyTerry,
    EncodedPairs,
    GeneralPreferenceModel,
    PreferenceEncoder,
)
from hyper_ls_backend.core.proxy_rm import ProxyRewardModel, preference_targets
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.strategies import judge_errors, make_strategy
from hyper_ls_backend.eval.campaign import paired_difference
from hyper_ls_backend.eval.crossval import group_bootstrap, summarize

CYCLE_STYLES = 5
STYLE_VOCABULARY = np.array([[f"s{s}w{i}" for i in range(20)] for s in range(CYCLE_STYLES)])
FILLER = np.array([f"w{i}" for i in range(2_000)])


def cyclic_comparisons(
    n: int, seed: int, noise: float = 0.1, per_group: int = 4, words: int = 10
) -> list[Comparison]:
    """``n`` comparisons of two responses in distinct styles, ``per_group`` to a prompt. A
    response in style s is ``words`` words from the style's own 20-word vocabulary and
    ``words`` filler words from 2,000 shared ones, uniform and shuffled. The human vote
    follows the cycle (s beats s+1 and s+2 mod 5) except with probability ``noise``."""
    rng = np.random.default_rng(seed)

    def response(style: int) -> str:
        texts = [*rng.choice(STYLE_VOCABULARY[style], words), *rng.choice(FILLER, words)]
        return " ".join(rng.permutation(texts))

    comparisons = []
    for i in range(n):
        a, b = rng.choice(CYCLE_STYLES, size=2, replace=False)
        a_wins = bool((b - a) % CYCLE_STYLES in (1, 2)) != bool(rng.random() < noise)
        group = f"p{i // per_group}"
        comparisons.append(
            Comparison(
                id=str(i),
                prompt=f"prompt {group}",
                response_a=response(a),
                response_b=response(b),
                human=[Label.A if a_wins else Label.B],
                meta={"group": group},
            )
        )
    return comparisons


class Scorer(Protocol):
    def fit(self, comparisons: EncodedPairs, labels: Sequence[Label | None]) -> Any: ...

    def margin(self, comparisons: EncodedPairs) -> np.ndarray: ...


class RidgeBaseline:
    """Today's proxy reward model (ridge on pair differences, ``core/proxy_rm.py``) behind
    the preference models' fit/margin calls, as the reference they should beat."""

    def fit(self, pairs: EncodedPairs, labels: Sequence[Label | None]) -> RidgeBaseline:
        self.model_ = ProxyRewardModel().fit((pairs.a - pairs.b).tocsr(), labels)
        return self

    def margin(self, pairs: EncodedPairs) -> np.ndarray:
        return self.model_.predict((pairs.a - pairs.b).tocsr())


MODELS: dict[str, Callable[[int], Scorer]] = {
    "ridge": lambda seed: RidgeBaseline(),
    "bradley-terry": lambda seed: BradleyTerry(),
    "gpm": lambda seed: GeneralPreferenceModel(seed=seed),
    "gpm-gated": lambda seed: GeneralPreferenceModel(gate=True, seed=seed),
}
REFERENCE = "bradley-terry"


def held_out_accuracy(
    comparisons: Sequence[Comparison],
    models: Sequence[str] = tuple(MODELS),
    seeds: int = 3,
    folds: int = 5,
) -> dict[str, Any]:
    """Grouped cross-validated accuracy of each model (see the module docstring)."""
    comparisons = list(comparisons)
    groups = np.array([c.group for c in comparisons])
    pairs = PreferenceEncoder().transform(comparisons)
    train_labels = [c.first_human for c in comparisons]
    targets = preference_targets([c.reference_label for c in comparisons])
    decisive = (targets != 0).astype(float)
    correct: dict[str, list[np.ndarray]] = {name: [] for name in models}
    seconds: dict[str, float] = dict.fromkeys(models, 0.0)
    for seed in range(seeds):
        margins = {name: np.zeros(len(comparisons)) for name in models}
        splitter = GroupKFold(folds, shuffle=True, random_state=seed)
        for train, test in splitter.split(comparisons, groups=groups):
            for name in models:
                start = time.perf_counter()
                model = MODELS[name](seed).fit(pairs.rows(train), [train_labels[i] for i in train])
                seconds[name] += time.perf_counter() - start
                margins[name][test] = model.margin(pairs.rows(test))
        for name in models:
            correct[name].append(decisive * (np.sign(margins[name]) * targets + 1) / 2)
    rows = []
    for name in models:
        accuracy = float(np.mean([c.sum() / decisive.sum() for c in correct[name]]))
        row = {
            "model": name,
            "accuracy": accuracy,
            "ci95": group_bootstrap(groups, correct[name], decisive, seed=0),
            "seconds_per_fit": seconds[name] / (seeds * folds),
        }
        if REFERENCE in correct and name != REFERENCE:
            paired = [c - r for c, r in zip(correct[name], correct[REFERENCE], strict=True)]
            row["minus_bradley_terry"] = {
                "mean": float(np.mean([p.sum() for p in paired]) / decisive.sum()),
                "ci95": group_bootstrap(groups, paired, decisive, seed=0),
            }
        rows.append(row)
    return {
        "n_comparisons": len(comparisons),
        "n_scored": int(decisive.sum()),
        "n_groups": len(set(groups.tolist())),
        "seeds": seeds,
        "folds": folds,
        "results": rows,
    }


def second_opinion(p_a: np.ndarray, comparisons: Sequence[Comparison]) -> np.ndarray:
    """A preference model's disagreement with the judge, weighted by its confidence: for a
    decisive judge label, ``max(0, 2 P(the other side) - 1)`` (0 when it agrees or cannot
    tell, 1 when sure of the other side); for a tie, ``|2 P(A) - 1|``; 0 without a label."""
    signal = np.zeros(len(comparisons))
    for i, c in enumerate(comparisons):
        if c.judge_label is Label.A:
            signal[i] = max(0.0, 1.0 - 2.0 * p_a[i])
        elif c.judge_label is Label.B:
            signal[i] = max(0.0, 2.0 * p_a[i] - 1.0)
        elif c.judge_label is Label.TIE:
            signal[i] = abs(2.0 * p_a[i] - 1.0)
    return signal


def cross_fitted_opinion(
    pairs: EncodedPairs, comparisons: Sequence[Comparison], rows: np.ndarray, folds: int
) -> np.ndarray:
    """``second_opinion`` on ``rows``, each from a Bradley-Terry model fitted on the human
    labels of the other inner folds (a model never sees the label it is scored against)."""
    groups = [comparisons[i].group for i in rows]
    p_a = np.zeros(len(rows))
    for fit, held in GroupKFold(folds).split(rows, groups=groups):
        model = BradleyTerry().fit(
            pairs.rows(rows[fit]), [comparisons[i].first_human for i in rows[fit]]
        )
        p_a[held] = model.predict_proba(pairs.rows(rows[held]))
    return second_opinion(p_a, [comparisons[i] for i in rows])


def second_opinion_gain(
    comparisons: Sequence[Comparison], seeds: int = 3, folds: int = 5, budget: float = 0.25
) -> dict[str, Any]:
    """Does the second opinion help rank the judge's errors? Grouped CV: on the training
    folds, the default router (``judge-signals``) is fitted and a logistic model of judge
    errors is fitted on its score alone (the recalibrated prior) and on its score plus the
    cross-fitted second opinion; both rank the held-out fold (whose opinion comes from a
    model fitted on all training folds). Out-of-fold AUC and capture at ``budget``
    (share of judge errors in the top ``budget`` x random), paired over seeds."""
    comparisons = list(comparisons)
    rows_judged, wrong = judge_errors(comparisons)
    judged = [comparisons[i] for i in rows_judged]
    groups = np.array([c.group for c in judged])
    pairs = PreferenceEncoder().transform(judged)
    outcome: dict[str, list[float]] = {
        k: [] for k in ("auc", "auc_with", "capture", "capture_with")
    }
    for seed in range(seeds):
        scores = {"without": np.zeros(len(judged)), "with": np.zeros(len(judged))}
        splitter = GroupKFold(folds, shuffle=True, random_state=seed)
        for train, test in splitter.split(judged, groups=groups):
            router = Router(make_strategy("judge-signals", seed=seed)).fit(
                [judged[i] for i in train]
            )
            prior_train, _ = router.score([judged[i] for i in train])
            prior_test, _ = router.score([judged[i] for i in test])
            opinion_train = cross_fitted_opinion(pairs, judged, train, folds)
            model = BradleyTerry().fit(pairs.rows(train), [judged[i].first_human for i in train])
            opinion_test = second_opinion(
                model.predict_proba(pairs.rows(test)), [judged[i] for i in test]
            )
            for key, x_train, x_test in (
                ("without", prior_train[:, None], prior_test[:, None]),
                ("with", np.c_[prior_train, opinion_train], np.c_[prior_test, opinion_test]),
            ):
                fitted = LogisticRegression().fit(x_train, wrong[train])
                scores[key][test] = fitted.decision_function(x_test)
        for key, suffix in (("without", ""), ("with", "_with")):
            outcome["auc" + suffix].append(float(roc_auc_score(wrong, scores[key])))
            top = np.argsort(-scores[key], kind="stable")[: int(budget * len(judged))]
            outcome["capture" + suffix].append(float(wrong[top].mean() / wrong.mean()))
    return {
        "n_judged": len(judged),
        "judge_error_rate": float(wrong.mean()),
        "seeds": seeds,
        "folds": folds,
        "budget": budget,
        **{key: summarize(values) for key, values in outcome.items()},
        "auc_gain": paired_difference(outcome["auc_with"], outcome["auc"]),
        "capture_gain": paired_difference(outcome["capture_with"], outcome["capture"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="*", metavar="DATA.jsonl")
    parser.add_argument("--synthetic", action="store_true", help="also the cyclic set")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument(
        "--second-opinion",
        action="store_true",
        help="measure the second opinion as a judge-error signal instead",
    )
    args = parser.parse_args()
    datasets = {path.stem: read_comparisons(path) for path in args.data}
    if args.second_opinion:
        gains = {
            name: second_opinion_gain(data, args.seeds, args.folds)
            for name, data in datasets.items()
        }
        args.report.write_text(json.dumps(gains, indent=1) + "\n", encoding="utf-8")
        for name, gain in gains.items():
            print(
                name,
                json.dumps(
                    {
                        k: gain[k]
                        for k in (
                            "auc",
                            "auc_with",
                            "capture",
                            "capture_with",
                            "auc_gain",
                            "capture_gain",
                        )
                    }
                ),
            )
        return
    if args.synthetic:
        datasets["cyclic-synthetic"] = cyclic_comparisons(1_000, seed=0)
    report = {
        name: held_out_accuracy(data, args.models, args.seeds, args.folds)
        for name, data in datasets.items()
    }
    args.report.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    for name, outcome in report.items():
        for row in outcome["results"]:
            low, high = row["ci95"]
            versus = ""
            if diff := row.get("minus_bradley_terry"):
                versus = "vs BT {:+.3f} ({:+.3f}, {:+.3f})".format(diff["mean"], *diff["ci95"])
            print(
                f"{name:24} {row['model']:14} {row['accuracy']:.3f} ({low:.3f}-{high:.3f})"
                f"  {versus:34} {row['seconds_per_fit']:.2f}s/fit"
            )


if __name__ == "__main__":
    main()
