"""Plots of offline evaluation reports (matplotlib, written to PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PANELS = (
    ("capture_ratio", "Judge-error capture / random", "x random"),
    ("label_accuracy", "Final label accuracy vs gold", "accuracy"),
    ("downstream_accuracy", "Proxy reward model accuracy\n(on held-out human labels)", "accuracy"),
)


def plot_simulation(report: dict[str, Any], path: str | Path) -> None:
    """One panel per measure, one line per strategy, error bars = std over seeds."""
    strategies = list(dict.fromkeys(r["strategy"] for r in report["results"]))
    figure, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.6))
    for axis, (key, title, unit) in zip(axes, PANELS, strict=True):
        for name in strategies:
            rows = sorted(
                (r for r in report["results"] if r["strategy"] == name), key=lambda r: r["budget"]
            )
            budgets = [r["budget"] for r in rows]
            means = [r[key]["mean"] for r in rows]
            stds = [r[key]["std"] for r in rows]
            if rows[0]["human_share"] in (0.0, 1.0):  # a fixed reference, not a budgeted router
                axis.plot(budgets, means, linestyle="--", linewidth=1.2, label=name)
            else:
                axis.errorbar(budgets, means, yerr=stds, marker="o", capsize=3, label=name)
        if key == "capture_ratio":
            axis.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        axis.set_title(title)
        axis.set_xlabel("human budget (share of comparisons)")
        axis.set_ylabel(unit)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(
        f"{report['n_comparisons']} comparisons, {report['n_groups']} groups, "
        f"{report['folds']}-fold grouped CV x {report['seeds']} seeds (mean ± std)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_campaigns(reports: list[dict[str, Any]], path: str | Path) -> None:
    """Capture over each campaign as it runs (one panel per budget), one line per policy."""
    figure, axes = plt.subplots(1, len(reports), figsize=(5.5 * len(reports), 4.4), squeeze=False)
    for axis, report in zip(axes[0], reports, strict=True):
        for row in report["results"]:
            curve = row["capture_curve"]
            seen = [report["batch_size"] * (i + 1) for i in range(len(curve))]
            axis.plot(seen, curve, label=row["policy"])
        axis.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        axis.set_title(f"budget {report['settings']['budget']:.2f}")
        axis.set_xlabel("comparisons seen")
        axis.set_ylabel("judge-error capture so far (x random)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    first = reports[0]
    prior = (
        f"prior fitted on half the data (split by {first['split']})"
        if first.get("prior") is None
        else f"whole data vs prior {first['prior']}"
    )
    figure.suptitle(f"campaign replays: {prior}, mean of {first['seeds']} seeds", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_guarantee(report: dict[str, Any], path: str | Path) -> None:
    """Per judge view, the risk-coverage curve (agreement of the AI-labelled part against its
    share) with each target and the mean share the guarantee allowed at it marked."""
    views = report["views"]
    columns = min(4, len(views))
    rows = -(-len(views) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns, 3.8 * rows), squeeze=False, sharey=True
    )
    for axis, view in zip(axes.flat, views, strict=False):
        curve = view["curve"]
        axis.plot(
            [p["share"] for p in curve], [p["agreement"] for p in curve], label="any threshold"
        )
        for target in view["targets"]:
            share = target["ai_share"]["mean"]
            axis.axhline(target["target"], color="grey", linestyle=":", linewidth=0.8)
            axis.plot([share], [target["target"]], marker="o", color="tab:red")
        axis.set_title(f"{view['dataset']}: {view['view']}", fontsize=9)
        axis.set_xlabel("share the judge labels")
        axis.set_ylabel("agreement with one human")
        axis.set_xlim(0, 1)
    for axis in list(axes.flat)[len(views) :]:
        axis.set_visible(False)
    figure.suptitle("risk-coverage; red: mean share certified at each target (dotted)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
