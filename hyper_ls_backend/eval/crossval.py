"""Offline evaluation: replay routing on labelled data with grouped cross-validation.

For every seed, the data are split into folds by ``meta.group``; each strategy is fitted on
the other folds and routes the held-out fold with its labels removed. Pooled over the
folds, each comparison is routed once per seed. Three measures per strategy and budget:

- judge-error capture: share of the comparisons where the judge disagrees with the first
  human vote that were routed to humans, and its ratio to the budget share (what random
  routing captures in expectation);
- final label accuracy: the campaign's labels (first human vote where routed, the judge's
  elsewhere) against ``gold`` (default: majority of human votes);
- downstream accuracy: a proxy reward model trained on the fold's hybrid labels, scored on
  the human labels of the other folds (the paper's measure, at CPU scale).

Spread is reported over seeds, and a 95% interval for capture by resampling groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.ppm import PROXY_RMS, hybrid_labels
from hyper_ls_backend.core.proxy_rm import PairEncoder, ProxyRewardModel, ranking_accuracy
from hyper_ls_backend.core.router import Route, Router
from hyper_ls_backend.core.strategies import PPMStrategy, make_strategy

BOOTSTRAP_SAMPLES = 1_000


@dataclass
class SeedOutcome:
    """One seed's pooled result for one strategy at one budget."""

    to_human: np.ndarray
    downstream: list[float] = field(default_factory=list)


def judge_wrong(comparisons: Sequence[Comparison]) -> np.ndarray:
    return np.array(
        [
            c.judge_label is not None
            and c.first_human is not None
            and c.judge_label != c.first_human
            for c in comparisons
        ]
    )


def label_accuracy(comparisons: Sequence[Comparison], to_human: np.ndarray) -> float:
    labels = hybrid_labels(comparisons, to_human)
    scored = [
        (label, c.reference_label)
        for label, c in zip(labels, comparisons, strict=True)
        if c.reference_label is not None
    ]
    return float(np.mean([label == reference for label, reference in scored]))


def capture(wrong: np.ndarray, to_human: np.ndarray) -> float:
    return float((wrong & to_human).sum() / max(wrong.sum(), 1))


def summarize(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
    }


def group_bootstrap(
    groups: np.ndarray,
    numerators: Sequence[np.ndarray],
    denominator: np.ndarray,
    seed: int,
) -> list[float]:
    """95% interval of ``mean over seeds of sum(numerator) / sum(denominator)`` (per-row
    arrays, one numerator per seed), resampling whole groups."""
    rng = np.random.default_rng(seed)
    unique, inverse = np.unique(groups, return_inverse=True)

    def per_group(values: np.ndarray) -> np.ndarray:
        return np.bincount(inverse, weights=np.asarray(values, float), minlength=len(unique))

    denominator_by_group = per_group(denominator)
    numerator_by_group = [per_group(n) for n in numerators]
    ratios = []
    for _ in range(BOOTSTRAP_SAMPLES):
        counts = np.bincount(rng.integers(0, len(unique), len(unique)), minlength=len(unique))
        total = max(float(counts @ denominator_by_group), 1.0)
        ratios.append(np.mean([counts @ n / total for n in numerator_by_group]))
    low, high = np.percentile(ratios, [2.5, 97.5])
    return [float(low), float(high)]


def group_bootstrap_capture(
    groups: np.ndarray, wrong: np.ndarray, routed: list[np.ndarray], share: float, seed: int
) -> list[float]:
    """95% interval of the capture ratio (averaged over seeds), resampling whole groups."""
    low, high = group_bootstrap(groups, [wrong & human for human in routed], wrong, seed)
    return [low / share, high / share]


def strategy_variants(
    strategies: Sequence[str], proxy_rms: Sequence[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Report name -> (strategy, parameters): ``hyper`` once per proxy reward model."""
    variants: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in strategies:
        if name == PPMStrategy.name:
            for proxy_rm in proxy_rms:
                variants[f"{name}[{proxy_rm}]"] = (name, {"proxy_rm": proxy_rm})
        else:
            variants[name] = (name, {})
    return variants


def simulate(
    comparisons: Sequence[Comparison],
    strategies: Sequence[str],
    budgets: Sequence[float],
    seeds: int = 5,
    folds: int = 5,
    progress: Callable[[], None] | None = None,
    proxy_rms: Sequence[str] = PROXY_RMS,
) -> dict[str, Any]:
    """Run the grouped cross-validated replay; returns a JSON-ready report.

    ``hyper`` is run once per proxy reward model in ``proxy_rms``, reported as
    ``hyper[ridge]``, ``hyper[bradley-terry]``, ``hyper[gpm]``."""
    comparisons = list(comparisons)
    variants = strategy_variants(strategies, proxy_rms)
    groups = np.array([c.group for c in comparisons])
    if len(set(groups.tolist())) < folds:
        raise ValueError(f"need at least {folds} groups for {folds}-fold grouped splits")
    wrong = judge_wrong(comparisons)
    encoder = PairEncoder()
    differences = encoder.transform(comparisons)
    outcomes: dict[tuple[str, float], list[SeedOutcome]] = {
        (s, b): [] for s in variants for b in budgets
    }
    for seed in range(seeds):
        seed_outcomes = {key: SeedOutcome(np.zeros(len(comparisons), bool)) for key in outcomes}
        splitter = GroupKFold(folds, shuffle=True, random_state=seed)
        for train, test in splitter.split(comparisons, groups=groups):
            train_set = [comparisons[i] for i in train]
            blind = [comparisons[i].without_labels() for i in test]
            held_out_labels = [c.reference_label for c in train_set]
            for name, (strategy, params) in variants.items():
                router = Router(make_strategy(strategy, seed=seed, **params)).fit(train_set)
                for budget in budgets:
                    result = router.route(blind, budget)
                    routed = np.array([d.route is Route.HUMAN for d in result.decisions])
                    outcome = seed_outcomes[(name, budget)]
                    outcome.to_human[test] = routed
                    labels = hybrid_labels([comparisons[i] for i in test], routed)
                    model = ProxyRewardModel().fit(differences[test], labels)
                    margins = model.predict(differences[train])
                    outcome.downstream.append(ranking_accuracy(margins, held_out_labels))
                if progress:
                    progress()
        for key, outcome in seed_outcomes.items():
            outcomes[key].append(outcome)
    return {
        "n_comparisons": len(comparisons),
        "n_groups": len(set(groups.tolist())),
        "judge_error_rate": float(wrong.mean()),
        "seeds": seeds,
        "folds": folds,
        "split": "GroupKFold by meta.group, shuffled with random_state=seed",
        "results": [
            _result(name, budget, seed_list, comparisons, groups, wrong)
            for (name, budget), seed_list in outcomes.items()
        ],
    }


def _result(
    name: str,
    budget: float,
    seed_list: list[SeedOutcome],
    comparisons: Sequence[Comparison],
    groups: np.ndarray,
    wrong: np.ndarray,
) -> dict[str, Any]:
    routed = [o.to_human for o in seed_list]
    share = float(np.mean([r.mean() for r in routed]))
    captures = [capture(wrong, r) for r in routed]
    return {
        "strategy": name,
        "budget": budget,
        "human_share": share,
        "capture": summarize(captures),
        "capture_ratio": summarize([c / share if share else 0.0 for c in captures]),
        "capture_ratio_ci95": group_bootstrap_capture(groups, wrong, routed, share, seed=0)
        if share
        else [0.0, 0.0],
        "label_accuracy": summarize([label_accuracy(comparisons, r) for r in routed]),
        "downstream_accuracy": summarize([float(np.mean(o.downstream)) for o in seed_list]),
    }
