"""Evaluating the preference models: the cyclic set, the second opinion, simulate's variants."""

from __future__ import annotations

import numpy as np
import pytest
from core.synthetic import make_records, write_records

from hyper_ls_backend.cli import main
from hyper_ls_backend.core.comparison import Comparison, JudgeVerdict, Label
from hyper_ls_backend.eval.crossval import strategy_variants
from hyper_ls_backend.eval.preference import (
    cyclic_comparisons,
    held_out_accuracy,
    second_opinion,
)


def judged(label: Label | None) -> Comparison:
    verdict = None if label is None else JudgeVerdict(label=label)
    return Comparison(id="c", prompt="p", response_a="a", response_b="b", judge=verdict)


def style(response: str) -> int:
    return int(next(word for word in response.split() if word.startswith("s"))[1])


def test_the_cyclic_set_follows_its_stated_cycle_with_noise():
    comparisons = cyclic_comparisons(2_000, seed=0)
    follows = [
        ((style(c.response_b) - style(c.response_a)) % 5 in (1, 2)) == (c.first_human is Label.A)
        for c in comparisons
    ]
    assert 0.87 <= np.mean(follows) <= 0.93
    assert len({c.group for c in comparisons}) == 500


def test_the_second_opinion_is_disagreement_weighted_by_confidence():
    p_a = np.array([0.9, 0.1, 0.5, 0.9, 0.2, 0.9])
    labels = [Label.A, Label.A, Label.A, Label.B, Label.TIE, None]
    signal = second_opinion(p_a, [judged(label) for label in labels])
    np.testing.assert_allclose(signal, [0.0, 0.8, 0.0, 0.8, 0.6, 0.0])


def test_held_out_accuracy_reports_each_model_against_bradley_terry():
    report = held_out_accuracy(
        cyclic_comparisons(200, seed=0), ["ridge", "bradley-terry"], seeds=1, folds=3
    )
    rows = {row["model"]: row for row in report["results"]}
    assert set(rows) == {"ridge", "bradley-terry"}
    assert "minus_bradley_terry" in rows["ridge"]
    low, high = rows["ridge"]["ci95"]
    assert low <= rows["ridge"]["accuracy"] <= high


def test_simulate_runs_hyper_once_per_proxy_reward_model():
    variants = strategy_variants(["random", "hyper"], ["ridge", "gpm"])
    assert variants == {
        "random": ("random", {}),
        "hyper[ridge]": ("hyper", {"proxy_rm": "ridge"}),
        "hyper[gpm]": ("hyper", {"proxy_rm": "gpm"}),
    }


def test_fit_takes_a_proxy_reward_model_only_for_hyper(tmp_path, capsys):
    write_records(tmp_path / "data.jsonl", make_records(30, seed=1, n_groups=3))
    args = ["fit", str(tmp_path / "data.jsonl"), "--out", str(tmp_path / "m.json")]
    assert main([*args, "--strategy", "judge-signals", "--proxy-rm", "gpm"]) == 2
    assert "--proxy-rm is for --strategy hyper" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--strategy", "hyper", "--proxy-rm", "elo"])
