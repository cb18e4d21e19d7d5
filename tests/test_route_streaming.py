"""``hyper-ls route`` streams its input: byte for byte the in-memory ``Router.route``
(every strategy, ties at the budget's edge, judge failures, chunk edges, a certified
threshold and a cap that binds), the same errors as ``read_comparisons``, and memory that
does not grow with the input beyond a few dozen bytes per comparison."""

from __future__ import annotations

import json
import multiprocessing
import random
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from core.synthetic import make_records, write_records

from hyper_ls_backend.cli import main
from hyper_ls_backend.core import streaming
from hyper_ls_backend.core.calibration import certify, usable
from hyper_ls_backend.core.dataset import DatasetError, read_comparisons
from hyper_ls_backend.core.router import Router, route_policy
from hyper_ls_backend.core.strategies import make_strategy
from hyper_ls_backend.priors import load_default_router

N_INPUTS = 3_000
CHUNK = 317
"""Small and odd, so chunks end anywhere (and some inside a run of tied scores)."""


def records_with_ties(n: int, seed: int) -> list[dict]:
    """``n`` records in shuffled id order, a tenth of them copies of others' texts and
    verdicts under other ids (equal scores, so ties at the budget's edge go by id), with
    judge failures and blank lines."""
    originals = n - n // 10
    base = make_records(originals, seed=seed, n_groups=40, judge_failures=range(3, originals, 97))
    copies = [{**base[i], "id": f"dup-{i:05d}"} for i in range(0, len(base), 9)]
    rows = [*base, *copies]
    random.Random(seed).shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("streaming")
    rows = records_with_ties(N_INPUTS, seed=11)
    text = "".join(json.dumps(r) + ("\n\n" if i % 500 == 7 else "\n") for i, r in enumerate(rows))
    (root / "inputs.jsonl").write_text(text, encoding="utf-8")
    write_records(root / "train.jsonl", make_records(300, seed=12, n_groups=20))
    write_records(root / "calibration.jsonl", make_records(600, seed=13, n_groups=60))
    return root


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_ROWS", CHUNK)


def in_memory(path: Path, router: Router, budget: float, certificate=None) -> bytes:
    """What route wrote before it streamed: every comparison routed at once."""
    comparisons = read_comparisons(path, drop_labels=True)
    decisions = router.route(comparisons, budget, certificate=certificate).decisions
    text = "".join(json.dumps(d.to_record(), ensure_ascii=False) + "\n" for d in decisions)
    return text.encode()


def streamed(files: Path, out: str, *extra: str) -> bytes:
    args = ["route", str(files / "inputs.jsonl"), "--out", str(files / out), *extra]
    assert main(args) == 0
    return (files / out).read_bytes()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_default_router_streams_byte_for_byte_as_in_memory(files, jobs):
    expected = in_memory(files / "inputs.jsonl", load_default_router(), 0.25)
    assert streamed(files, f"default-{jobs}.jsonl", "--budget", "0.25", "--jobs", jobs) == (
        expected
    )


@pytest.mark.parametrize("jobs", [1, 2])
def test_equal_scores_at_the_budgets_edge_go_to_humans_by_id(tmp_path, jobs):
    (record,) = make_records(1, seed=16)
    ids = [f"t{i:03d}" for i in random.Random(0).sample(range(200), 200)]  # file order
    write_records(tmp_path / "same.jsonl", [{**record, "id": i} for i in ids])
    out = tmp_path / "same.out"
    summary, _ = streaming.route_file(
        tmp_path / "same.jsonl", out, load_default_router(), route_policy(0.3), n_jobs=jobs
    )
    decisions = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["id"] for d in decisions] == ids
    assert len({d["score"] for d in decisions}) == 1
    assert {d["id"] for d in decisions if d["route"] == "human"} == set(sorted(ids)[:60])
    assert summary.n_human == 60


@pytest.mark.parametrize(
    "strategy", ["random", "all-human", "all-judge", "uncertainty", "judge-consistency"]
)
def test_fixed_strategies_fitted_on_the_inputs_stream_as_in_memory(files, strategy):
    inputs = read_comparisons(files / "inputs.jsonl", drop_labels=True)
    base = load_default_router()
    router = Router(make_strategy(strategy), featurizer=base.featurizer).fit(inputs)
    expected = in_memory(files / "inputs.jsonl", router, 0.3)
    extra = ["--budget", "0.3", "--strategy", strategy, "--jobs", "2"]
    assert streamed(files, f"{strategy}.jsonl", *extra) == expected


def test_a_strategy_fitted_on_labels_streams_as_in_memory(files):
    base = load_default_router()
    labelled = read_comparisons(files / "train.jsonl")
    router = Router(make_strategy("judge-error"), featurizer=base.featurizer).fit(labelled)
    expected = in_memory(files / "inputs.jsonl", router, 0.2)
    extra = ["--strategy", "judge-error", "--labeled", str(files / "train.jsonl")]
    assert streamed(files, "judge-error.jsonl", "--budget", "0.2", *extra) == expected


def test_the_ppm_selection_of_the_whole_batch_streams_as_in_memory(files):
    """``hyper`` picks among mixes of the whole batch: the plan reads every feature row back
    from the spool (a small PPM, to keep the test quick)."""
    strategy = make_strategy("hyper", n_mixes=60, n_candidates=40)
    labelled = read_comparisons(files / "train.jsonl")
    router = Router(strategy, featurizer=load_default_router().featurizer).fit(labelled)
    expected = in_memory(files / "inputs.jsonl", router, 0.2)
    out = files / "hyper.jsonl"
    streaming.route_file(files / "inputs.jsonl", out, router, route_policy(0.2), n_jobs=2)
    assert out.read_bytes() == expected


@pytest.mark.parametrize("cap", [None, "0.05"], ids=["certified", "cap-binds"])
def test_a_certified_threshold_streams_as_in_memory(files, cap):
    router = load_default_router()
    calibration = usable(read_comparisons(files / "calibration.jsonl"))
    certificate = certify(router, calibration, 0.8, 0.9).certificate_
    assert certificate is not None
    expected = in_memory(files / "inputs.jsonl", router, float(cap or 1.0), certificate)
    extra = ["--target-agreement", "0.8", "--calibration", str(files / "calibration.jsonl")]
    extra += ["--budget", cap] if cap else []
    decisions = streamed(files, f"certified-{cap}.jsonl", *extra)
    assert decisions == expected
    heads = {json.loads(line)["reasons"][0].split(":")[0] for line in decisions.splitlines()}
    assert ("not certified" in heads) == (cap is not None)  # both branches are exercised
    assert ("certified" in heads) == (cap is None)


def test_the_same_errors_as_reading_the_whole_file(tmp_path):
    good = make_records(CHUNK * 3, seed=14)
    lines = [json.dumps(r) for r in good]
    for i in range(5, len(lines), 40):  # bad lines in every chunk, more than are shown
        lines[i] = "{broken" if i % 80 == 5 else json.dumps({"id": f"x{i}", "prompt": "p"})
    for i in (CHUNK + 3, 2 * CHUNK + 11, len(lines) - 1):  # ids seen in an earlier chunk
        lines[i] = json.dumps({**good[i - CHUNK + 1], "human": "A"})
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as whole:
        read_comparisons(path, drop_labels=True)
    with pytest.raises(DatasetError) as stream:
        streaming.route_file(
            path, tmp_path / "out.jsonl", load_default_router(), route_policy(0.25), n_jobs=2
        )
    assert str(stream.value) == str(whole.value)
    assert "duplicate id" in str(stream.value) and "... and" in str(stream.value)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("text", ["", "\n\n"], ids=["no-bytes", "blank-lines"])
def test_a_file_without_comparisons_is_an_error(tmp_path, capsys, text):
    (tmp_path / "empty.jsonl").write_text(text, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["route", str(tmp_path / "empty.jsonl"), "--budget", "0.5", "--out", str(out)]) == 2
    assert "no comparisons to route" in " ".join(capsys.readouterr().err.split())


def traced_peak(directory: Path, n: int) -> int:
    """Peak bytes allocated by one in-process route of ``n`` comparisons, chunks of 200."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(streaming, "CHUNK_ROWS", 200)
    path = write_records(directory / f"n{n}.jsonl", make_records(n, seed=15, n_groups=30))
    router = load_default_router()
    tracemalloc.start()
    try:
        streaming.route_file(path, directory / f"n{n}.out", router, route_policy(0.25))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        monkeypatch.undo()


def test_memory_grows_by_a_few_dozen_bytes_per_comparison(tmp_path):
    """Measured in a fresh interpreter: tracemalloc counts every thread's allocations, and
    threads other tests leave behind in this one allocate too (108 bytes a comparison in
    one CI run, where a quiet process measures 62-71)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        small, large = (pool.submit(traced_peak, tmp_path, n).result() for n in (1_000, 10_000))
    # holding each comparison (its texts as objects) would cost kilobytes each
    assert (large - small) / 9_000 < 100


@pytest.mark.parametrize("can_prefill_tie", [True, False])
def test_the_flags_kept_of_each_row_are_its_scored_ones(can_prefill_tie):
    """``streaming._flags`` says of each row what ``Scored`` (what the policy makes of a
    comparison) says: forced, doubtful, an unfillable tie."""
    from itertools import product

    from hyper_ls_backend.core.comparison import Label
    from hyper_ls_backend.core.policy import Scored
    from hyper_ls_backend.core.signals import UNJUDGED, JudgeSignals

    signals = [UNJUDGED] + [
        JudgeSignals(
            True, label is None, label, label, consistent, None, confidence, 0, 0, None, None, None
        )
        for label, consistent, confidence in product(
            [Label.A, Label.B, Label.TIE, None], [True, False, None], [None, 0.0, 0.5]
        )
    ]
    forced, doubtful, unfillable_tie = streaming._flags(signals, can_prefill_tie)
    scored = [Scored("x", 0.0, [], s, can_prefill_tie=can_prefill_tie) for s in signals]
    assert forced.tolist() == [s.forced for s in scored]
    assert doubtful.tolist() == [s.doubtful for s in scored]
    assert unfillable_tie.tolist() == [s.unfillable_tie for s in scored]
    assert any(doubtful) and not all(doubtful) and any(forced)
    assert any(unfillable_tie) == (not can_prefill_tie)
