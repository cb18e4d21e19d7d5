"""``simulate --target-agreement``: the split evaluation of the agreement guarantee."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from core.synthetic import make_records, write_records

from hyper_ls_backend.cli import main
from hyper_ls_backend.eval.guarantee import ScoredView, evaluate_guarantee, risk_coverage


def view(n: int = 600, seed: int = 0) -> ScoredView:
    """Agreement falls with the score: P(a human agrees) = 1 - 0.5 x score."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=n)
    humans = [[bool(rng.uniform() < 1 - 0.5 * s)] for s in scores]
    return ScoredView(
        name="synthetic",
        scores=scores,
        agreement=np.array([float(h[0]) for h in humans]),
        humans=humans,
        groups=np.arange(n) // 3,
    )


def test_the_guarantee_holds_where_the_naive_threshold_does_not():
    report = evaluate_guarantee(view(), [0.85], splits=60, seed=3)
    (row,) = report["targets"]
    assert row["splits"] == 60
    assert row["held"]["rate"] >= 0.85
    assert row["naive"]["held"]["rate"] < row["held"]["rate"]
    assert 0 < row["ai_share"]["mean"] < row["naive"]["ai_share"]["mean"]


def test_an_unreachable_target_certifies_nothing_and_holds_vacuously():
    (row,) = evaluate_guarantee(view(), [0.99], splits=10)["targets"]
    assert row["certified"] == 0.0 and row["ai_share"]["mean"] == 0.0
    assert row["held"]["rate"] == 1.0 and row["agreement"] is None


def test_the_risk_coverage_curve_runs_from_the_most_trusted_to_all():
    scores, agreement = np.array([0.3, 0.1, 0.2, 0.4]), np.array([0.0, 1.0, 1.0, 1.0])
    curve = risk_coverage(scores, agreement, points=4)
    assert [p["share"] for p in curve] == [0.25, 0.5, 0.75, 1.0]
    assert [p["agreement"] for p in curve] == [1.0, 1.0, 2 / 3, 0.75]


def test_simulate_target_agreement_writes_a_report_and_a_plot(tmp_path: Path):
    data = write_records(tmp_path / "data.jsonl", make_records(300, seed=2, n_groups=60))
    report, plot = tmp_path / "report.json", tmp_path / "plot.png"
    code = main(
        [
            "simulate",
            str(data),
            "--target-agreement",
            "0.6",
            "0.9",
            "--seeds",
            "5",
            "--report",
            str(report),
            "--plot",
            str(plot),
        ]
    )
    assert code == 0
    outcome = json.loads(report.read_text())
    (only,) = outcome["views"]
    assert [row["target"] for row in only["targets"]] == [0.6, 0.9]
    assert all(row["splits"] == 5 for row in only["targets"])
    assert plot.stat().st_size > 0
