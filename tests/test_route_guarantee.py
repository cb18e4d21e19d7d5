"""``hyper-ls route --target-agreement``: the exact contract of issue 8 on synthetic data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from core.synthetic import make_records, read_jsonl, write_records

from hyper_ls_backend.cli import main

N_INPUTS = 200


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("guarantee")
    write_records(root / "calibration.jsonl", make_records(600, seed=5, n_groups=60))
    inputs = make_records(N_INPUTS, seed=6, n_groups=20)
    write_records(root / "inputs.jsonl", inputs)
    unlabelled = [
        {k: v for k, v in r.items() if k != "human"} if i % 50 == 0 else r
        for i, r in enumerate(make_records(100, seed=7, n_groups=10))
    ]
    write_records(root / "unlabelled.jsonl", unlabelled)
    return root


def route(files: Path, out: str, *extra: str) -> int:
    return main(["route", str(files / "inputs.jsonl"), "--out", str(files / out), *extra])


def certified(files: Path, target: str, *extra: str) -> list[dict]:
    calibration = ["--calibration", str(files / "calibration.jsonl")]
    assert route(files, f"t{target}.jsonl", "--target-agreement", target, *calibration, *extra) == 0
    return read_jsonl(files / f"t{target}.jsonl")


def test_a_reachable_target_is_certified_and_reported(files, capsys):
    decisions = certified(files, "0.8")
    said = " ".join(capsys.readouterr().err.split())
    assert "certified agreement >= 80% at 90% confidence: threshold " in said
    assert "calibration 600" in said
    ai = [d for d in decisions if d["route"] == "ai"]
    assert 0 < len(ai) < N_INPUTS
    assert f"the judge labels {len(ai)} of {N_INPUTS}" in said
    threshold = float(said.split("threshold ", 1)[1].split(",", 1)[0])
    for decision in decisions:  # scores and the threshold are printed rounded
        if decision["route"] == "ai":
            assert decision["score"] <= threshold + 1e-4
            assert decision["reasons"][0].startswith("certified: scores ")
        else:
            assert decision["score"] >= threshold - 1e-4


def test_a_lower_target_lets_the_judge_label_at_least_as_much(files):
    share = {t: sum(d["route"] == "ai" for d in certified(files, t)) for t in ("0.6", "0.8")}
    assert share["0.6"] >= share["0.8"]


def test_an_unreachable_target_sends_everything_to_humans_and_says_why(files, capsys):
    decisions = certified(files, "0.95")
    said = " ".join(capsys.readouterr().err.split())
    assert {d["route"] for d in decisions} == {"human"}
    assert "not certified: no threshold certifies agreement 95% at 90% confidence" in said
    assert f"all {N_INPUTS} go to humans" in said


def test_a_budget_cap_that_binds_routes_by_the_budget_and_says_the_guarantee_is_void(files, capsys):
    decisions = certified(files, "0.8", "--budget", "0.05")
    said = " ".join(capsys.readouterr().err.split())
    assert sum(d["route"] == "human" for d in decisions) == math.floor(0.05 * N_INPUTS)
    assert "not certified: the threshold certifying agreement >= 80%" in said
    assert "routed by the budget, without the guarantee" in said


def test_a_cap_with_room_changes_nothing(files):
    assert certified(files, "0.8", "--budget", "0.9") == certified(files, "0.8")


def test_inputs_labels_are_never_read(files, tmp_path):
    blind = [
        {k: v for k, v in r.items() if k not in ("human", "gold")}
        for r in read_jsonl(files / "inputs.jsonl")
    ]
    write_records(tmp_path / "blind.jsonl", blind)
    calibration = ["--calibration", str(files / "calibration.jsonl")]
    out = tmp_path / "blind_out.jsonl"
    args = ["--target-agreement", "0.8", *calibration, "--out", str(out)]
    assert main(["route", str(tmp_path / "blind.jsonl"), *args]) == 0
    assert read_jsonl(out) == certified(files, "0.8")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--target-agreement", "0.8"], "--target-agreement and --calibration go together"),
        ([], "--budget is required (or --target-agreement with --calibration)"),
        (
            ["--target-agreement", "0.8", "--calibration", "{unlabelled}"],
            "2 rows have no human label (c0000, c0050)",
        ),
        (["--target-agreement", "1.0", "--calibration", "{calibration}"], "strictly between"),
    ],
    ids=["no-calibration", "no-budget", "unlabelled-calibration", "target-out-of-range"],
)
def test_bad_guarantee_arguments_are_clear_errors(files, capsys, extra, says):
    extra = [
        e.format(unlabelled=files / "unlabelled.jsonl", calibration=files / "calibration.jsonl")
        for e in extra
    ]
    try:
        code = route(files, "never.jsonl", *extra)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    assert says in " ".join(capsys.readouterr().err.split())
    assert not (files / "never.jsonl").exists()


def test_route_keeps_its_output_schema_under_a_target(files):
    (first, *_) = certified(files, "0.8")
    assert set(first) == {"id", "route", "score", "reasons"}
    assert json.dumps(first)
