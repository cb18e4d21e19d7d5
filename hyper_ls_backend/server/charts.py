"""The dashboard's plots, as inline SVG drawn server-side.

Only matplotlib's object API (``Figure``), never pyplot: handlers run in FastAPI's
threadpool and pyplot's global figure registry is not thread-safe. Each function takes
parts of a ``ProjectStatus`` and returns an ``<svg>`` element, or ``None`` when there is
nothing to draw. Text that comes from data (tags, feature names, quality measures) is drawn
with ``parse_math=False``: a ``$`` in a tag must not be read as mathtext.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from hyper_ls_backend.server.status import (
    Agreement,
    Budget,
    QualityTarget,
    RouterVersionStatus,
    Routes,
)

WIDTH = 8.0
"""Inches (SVG user units are points: 72 per inch)."""
ROUTE_COLOURS = {"ai": "#4c78a8", "human": "#f58518", "audit": "#54a24b", "forced": "#e45756"}
HUMAN_QUEUE = ("human", "audit", "forced")
"""The routes that send a task to humans: together, the budget used."""


def to_svg(figure: Figure) -> str:
    """The figure as an ``<svg>`` element (XML prologue and doctype dropped, no date)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def budget_and_routes(budget: Budget, routes: Routes) -> str:
    """The human queue (router's picks, audits, forced) against the budget, and decisions
    by route."""
    figure = Figure(figsize=(WIDTH, 2.4))
    used_axis, routes_axis = figure.subplots(1, 2, width_ratios=(1, 1.3))
    start = 0
    for kind in HUMAN_QUEUE:
        count = getattr(routes, kind)
        used_axis.barh([0], [count], left=[start], color=ROUTE_COLOURS[kind], label=kind)
        start += count
    used_axis.barh([0], [budget.left], left=[start], color="#d9d9d9", label="left")
    used_axis.axvline(budget.allowed, color="black", linewidth=1.2, label="allowed")
    used_axis.set_ylim(-1.2, 1.2)
    used_axis.set_yticks([])
    used_axis.set_xlabel("human labels")
    used_axis.set_title(f"Human budget ({budget.share:.0%} of {routes.received} tasks)")
    used_axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=5, frameon=False)
    kinds = list(ROUTE_COLOURS)
    counts = [getattr(routes, kind) for kind in kinds]
    bars = routes_axis.bar(kinds, counts, color=[ROUTE_COLOURS[k] for k in kinds])
    routes_axis.bar_label(bars)
    routes_axis.set_ylabel("tasks")
    routes_axis.set_title("Tasks routed")
    routes_axis.margins(y=0.2)
    return to_svg(figure)


def agreement(rows: Sequence[tuple[str, Agreement]], title: str) -> str:
    """Judge-human agreement per row, with its Wilson 95% interval and sample size."""
    figure = Figure(figsize=(WIDTH, 0.9 + 0.38 * len(rows)))
    axis = figure.subplots()
    positions = range(len(rows))
    for y, (_, measured) in zip(positions, rows, strict=True):
        if measured.rate is None or measured.ci95 is None:
            axis.text(0.5, y, "no labels yet", ha="center", va="center", color="grey")
            continue
        low, high = measured.ci95
        axis.errorbar(
            [measured.rate],
            [y],
            xerr=[[measured.rate - low], [high - measured.rate]],
            fmt="o",
            color="#4c78a8",
            capsize=4,
        )
        axis.annotate(f"n={measured.n}", (1.0, y), xytext=(6, 0), textcoords="offset points")
    axis.set_yticks(list(positions), [label for label, _ in rows], parse_math=False)
    axis.set_ylim(len(rows) - 0.5, -0.5)
    axis.set_xlim(0, 1)
    axis.set_xlabel("agreement with the human label (95% interval)")
    axis.set_title(title, parse_math=False)
    axis.grid(axis="x", alpha=0.3)
    return to_svg(figure)


def spend(lm_usd: float, human_saved_usd: float) -> str:
    """What the LM cost against what its labels would have cost from humans."""
    figure = Figure(figsize=(WIDTH, 1.8))
    axis = figure.subplots()
    bars = axis.barh(
        ["LM spend", "human cost saved"],
        [lm_usd, human_saved_usd],
        color=["#e45756", "#54a24b"],
    )
    axis.bar_label(bars, labels=[f"${lm_usd:,.2f}", f"${human_saved_usd:,.2f}"], padding=4)
    axis.invert_yaxis()
    axis.margins(x=0.25)
    axis.set_xlabel("USD")
    return to_svg(figure)


def router_quality(versions: Sequence[RouterVersionStatus]) -> str | None:
    """Each numeric quality measure of the refitted versions over time, one panel per
    measure (whatever measures the refits record); the starting router has none."""
    versions = [v for v in versions if v.created_at is not None]
    measures = sorted(
        {key for version in versions for key, value in version.quality.items() if is_number(value)}
    )
    if not measures:
        return None
    figure = Figure(figsize=(WIDTH, 1.2 + 1.5 * len(measures)))
    axes = figure.subplots(len(measures), 1, sharex=True, squeeze=False)[:, 0]
    for axis, measure in zip(axes, measures, strict=True):
        points = [
            (x, v.quality[measure], v.in_use)
            for x, v in enumerate(versions)
            if is_number(v.quality.get(measure))
        ]
        axis.plot([x for x, _, _ in points], [q for _, q, _ in points], marker="o")
        in_use = [(x, q) for x, q, is_in_use in points if is_in_use]
        if in_use:
            axis.plot(*zip(*in_use, strict=True), "*", markersize=14, color="#f58518")
        axis.set_ylabel(measure, rotation=0, ha="right", parse_math=False)
        axis.grid(alpha=0.3)
    # Versions are evenly spaced in the order they were made, labelled with when.
    axes[-1].set_xticks(
        range(len(versions)),
        [v.created_at.strftime("%m-%d %H:%M") for v in versions if v.created_at],
        rotation=30,
        ha="right",
    )
    axes[-1].set_xlim(-0.5, len(versions) - 0.5)
    axes[0].set_title("Router versions, oldest first (star: in use)")
    return to_svg(figure)


def feature_weights(features: Sequence[dict[str, Any]]) -> str | None:
    """The features that move routing most: positive weights push a task to humans."""
    if not features:
        return None
    figure = Figure(figsize=(WIDTH, 0.8 + 0.32 * len(features)))
    axis = figure.subplots()
    weights = [f["weight"] for f in features]
    positions = range(len(features))
    axis.barh(positions, weights, color=["#f58518" if w > 0 else "#4c78a8" for w in weights])
    axis.set_yticks(list(positions), [f["feature"] for f in features], parse_math=False)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.invert_yaxis()
    axis.set_xlabel("weight in the routing score (← judge, human →)")
    axis.grid(axis="x", alpha=0.3)
    return to_svg(figure)


def risk_coverage(target: QualityTarget) -> str | None:
    """Agreement and its certified bound against the share labelled, per threshold tried,
    with the target and the certified threshold marked."""
    if not target.curve:
        return None
    figure = Figure(figsize=(WIDTH, 3.0))
    axis = figure.subplots()
    coverage = [point.coverage for point in target.curve]
    axis.plot(coverage, [p.agreement for p in target.curve], marker="o", label="agreement")
    axis.plot(coverage, [p.lower_bound for p in target.curve], marker=".", label="certified bound")
    axis.axhline(target.target_agreement, color="black", linestyle=":", label="target")
    chosen = [p for p in target.curve if p.threshold == target.threshold]
    if chosen:
        axis.plot(
            [chosen[0].coverage],
            [chosen[0].lower_bound],
            marker="o",
            markersize=14,
            fillstyle="none",
            color="#e45756",
            linestyle="none",
            label="certified threshold",
        )
    axis.set_xlim(0, 1.02)
    axis.set_xlabel("share of audited tasks under the threshold")
    axis.set_ylabel("agreement with a human")
    axis.legend(loc="lower left", frameon=False)
    return to_svg(figure)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
