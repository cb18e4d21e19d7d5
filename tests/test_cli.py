"""The ``hyper-ls`` command line: route, fit and simulate, in-process and as a console script."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from core.synthetic import make_records, read_jsonl, write_records

from hyper_ls_backend.cli import main
from hyper_ls_backend.core.dataset import read_comparisons
from hyper_ls_backend.core.router import Router

CONSOLE_SCRIPT = Path(sys.executable).with_name("hyper-ls")
N_INPUTS = 50
FAILED_INPUTS = (4, 30)


def flat(text: str) -> str:
    """Console output with line wrapping undone."""
    return " ".join(text.split())


def without_labels(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("human", "gold")}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Training data, inputs (with labels, without, with garbage labels) and a fitted model."""
    root = tmp_path_factory.mktemp("cli")
    write_records(root / "train.jsonl", make_records(160, seed=0, n_groups=12))
    inputs = make_records(N_INPUTS, seed=1, n_groups=8, judge_failures=FAILED_INPUTS)
    write_records(root / "inputs.jsonl", inputs)
    write_records(root / "blind.jsonl", [without_labels(r) for r in inputs])
    garbage = [{**r, "human": ["not-a-label"], "gold": 17} for r in inputs]
    write_records(root / "garbage_labels.jsonl", garbage)
    assert main(["fit", str(root / "train.jsonl"), "--out", str(root / "model.json")]) == 0
    return root


def route(work: Path, out: str, *extra: str, source: str = "inputs.jsonl") -> int:
    return main(["route", str(work / source), "--budget", "0.3", "--out", str(work / out), *extra])


def humans(records: list[dict]) -> int:
    return sum(r["route"] == "human" for r in records)


# -- route --------------------------------------------------------------------------------------


def test_fit_writes_a_router_artifact(work):
    artifact = json.loads((work / "model.json").read_text())
    assert artifact["format"] == "hyper-ls-router/2"
    assert artifact["strategy"]["name"] == "judge-signals"
    assert artifact["n_fitted"] == 160


def test_route_writes_one_decision_per_input_with_the_exact_schema(work):
    assert route(work, "decisions.jsonl", "--model", str(work / "model.json")) == 0
    records = read_jsonl(work / "decisions.jsonl")
    assert [r["id"] for r in records] == [f"c{i:04d}" for i in range(N_INPUTS)]
    for record in records:
        assert set(record) == {"id", "route", "score", "reasons"}
        assert record["route"] in ("human", "ai")
        assert isinstance(record["score"], float)
        assert record["reasons"] and all(isinstance(r, str) and r for r in record["reasons"])
    assert humans(records) == math.floor(0.3 * N_INPUTS)
    for i in FAILED_INPUTS:
        assert records[i]["route"] == "human"


def test_route_matches_the_library(work):
    assert route(work, "cli.jsonl", "--model", str(work / "model.json")) == 0
    router = Router.load(work / "model.json")
    result = router.route(read_comparisons(work / "inputs.jsonl", drop_labels=True), 0.3)
    assert [r["route"] for r in read_jsonl(work / "cli.jsonl")] == [
        d.route.value for d in result.decisions
    ]


@pytest.mark.parametrize("strategy", [None, "random", "judge-consistency"])
def test_route_output_is_the_same_without_labels(work, strategy):
    extra = ["--model", str(work / "model.json")]
    extra += ["--strategy", strategy] if strategy else []
    outputs = []
    for source in ("inputs.jsonl", "blind.jsonl", "garbage_labels.jsonl"):
        out = f"labels-{strategy}-{source}"
        assert route(work, out, *extra, source=source) == 0
        outputs.append((work / out).read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_route_with_the_shipped_prior(work):
    assert route(work, "prior.jsonl") == 0
    records = read_jsonl(work / "prior.jsonl")
    assert len(records) == N_INPUTS
    assert humans(records) == math.floor(0.3 * N_INPUTS)


def panel_record(i: int, orders: tuple[str, str], confidence: float | None, others: list[str]):
    primary = {"model": "p", "label": "A", "orders": {"ab": orders[0], "ba": orders[1]}}
    if confidence is not None:
        primary["confidence"] = confidence
    panel = [{"model": f"q{k}", "label": label} for k, label in enumerate(others)]
    return {
        "id": f"p{i}",
        "prompt": f"Question {i}: which answer is better?",
        "response_a": f"An answer of {i} words or so, here.",
        "response_b": f"Another answer, number {i}.",
        "judges": [primary, *panel],
    }


def test_route_with_no_flags_reads_panels_orders_and_confidences(work):
    steady = [panel_record(i, ("A", "A"), 0.95, ["A", "A"]) for i in range(7)]
    flipped = panel_record(7, ("A", "B"), 0.95, ["A", "A"])
    unsure = panel_record(8, ("A", "A"), 0.5, ["A", "A"])
    outvoted = panel_record(9, ("A", "A"), 0.95, ["B", "B"])
    write_records(work / "panel.jsonl", [*steady, flipped, unsure, outvoted])
    assert main(["route", str(work / "panel.jsonl"), "--budget", "0.2", "--out",
                 str(work / "panel_out.jsonl")]) == 0  # fmt: skip
    records = {r["id"]: r for r in read_jsonl(work / "panel_out.jsonl")}
    assert {i for i, r in records.items() if r["route"] == "human"} == {"p7", "p8"}
    assert records["p7"]["reasons"][0].startswith("the judge changed its answer when the order")
    assert any(r.startswith("low judge confidence (0.50)") for r in records["p8"]["reasons"])


def test_random_strategy_works_without_a_model(work, capsys):
    assert route(work, "random.jsonl", "--strategy", "random") == 0
    records = read_jsonl(work / "random.jsonl")
    assert humans(records) == math.floor(0.3 * N_INPUTS)
    assert "strategy random" in flat(capsys.readouterr().err)


def test_learned_strategy_other_than_the_models_needs_labels(work, capsys):
    code = route(work, "nope.jsonl", "--model", str(work / "model.json"), "--strategy", "hyper")
    assert code == 2
    err = flat(capsys.readouterr().err)
    assert "'hyper' must be fitted" in err
    assert "--labeled" in err
    assert not (work / "nope.jsonl").exists()


def test_learned_strategy_is_fitted_on_labeled_data(work):
    extra = ["--strategy", "simple-logreg", "--labeled", str(work / "train.jsonl")]
    assert route(work, "simple.jsonl", "--model", str(work / "model.json"), *extra) == 0
    assert humans(read_jsonl(work / "simple.jsonl")) == math.floor(0.3 * N_INPUTS)


def test_labeled_data_refits_the_model(work):
    extra = ["--labeled", str(work / "train.jsonl"), "--prior-strength", "10"]
    assert route(work, "refit.jsonl", "--model", str(work / "model.json"), *extra) == 0
    assert humans(read_jsonl(work / "refit.jsonl")) == math.floor(0.3 * N_INPUTS)


def test_fit_then_route_with_a_fixed_strategy_model(work):
    model = work / "consistency.json"
    fit = ["fit", str(work / "train.jsonl"), "--out", str(model)]
    assert main([*fit, "--strategy", "judge-consistency"]) == 0
    assert route(work, "consistency.jsonl", "--model", str(model)) == 0


def test_judge_failures_beyond_the_budget_warn_but_succeed(work, capsys):
    records = make_records(10, seed=3, judge_failures=range(5))
    write_records(work / "failures.jsonl", records)
    extra = ["--model", str(work / "model.json")]
    assert route(work, "failures-out.jsonl", *extra, source="failures.jsonl") == 0
    assert humans(read_jsonl(work / "failures-out.jsonl")) == 5
    assert "exceeds the budget of 3" in flat(capsys.readouterr().err)


# -- errors --------------------------------------------------------------------------------------


def valid_line(i: int) -> str:
    return json.dumps(make_records(i + 1, seed=5)[i])


MALFORMED = [
    pytest.param([valid_line(0), valid_line(1), "{broken"], "line 3: not valid JSON", id="json"),
    pytest.param(
        [valid_line(0), json.dumps({"id": "x", "prompt": "p", "response_a": "a"})],
        "line 2: response_b: Field required",
        id="missing-field",
    ),
    pytest.param(
        [json.dumps({"id": "x", "prompt": "p", "response_a": "", "response_b": ""})],
        "line 1: record: response_a and response_b are both empty",
        id="both-empty",
    ),
    pytest.param([valid_line(0), valid_line(0)], "line 2: duplicate id 'c0000'", id="duplicate"),
    pytest.param(["[1, 2]"], "line 1: expected a JSON object", id="not-an-object"),
]


@pytest.mark.parametrize(("lines", "message"), MALFORMED)
def test_malformed_input_exits_2_naming_the_line(work, capsys, lines, message):
    bad = work / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = work / "bad-out.jsonl"
    out.unlink(missing_ok=True)
    assert main(["route", str(bad), "--budget", "0.5", "--out", str(out)]) == 2
    err = flat(capsys.readouterr().err)
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_error_messages_with_brackets_are_printed_verbatim(work, capsys):
    bad = work / "brackets.jsonl"
    record = {"id": "[/x]", "prompt": "p", "response_a": "a", "response_b": "b"}
    write_records(bad, [record, record])
    assert main(["route", str(bad), "--budget", "0.5", "--out", str(work / "o.jsonl")]) == 2
    assert "duplicate id '[/x]'" in flat(capsys.readouterr().err)


def test_missing_input_file_exits_2_naming_it_in_plain_words(work, capsys):
    assert route(work, "o.jsonl", source="does-not-exist.jsonl") == 2
    message = flat(capsys.readouterr().err)
    assert "does-not-exist.jsonl: no such file or directory" in message
    assert "Errno" not in message


def test_model_that_is_not_a_router_exits_2(work, capsys):
    (work / "not-a-model.json").write_text('{"format": "other"}', encoding="utf-8")
    assert route(work, "o.jsonl", "--model", str(work / "not-a-model.json")) == 2
    assert "hyper-ls-router/2" in flat(capsys.readouterr().err)


def test_an_empty_input_is_an_error(work, capsys):
    (work / "empty.jsonl").write_text("\n", encoding="utf-8")
    assert route(work, "o.jsonl", source="empty.jsonl") == 2
    assert "no comparisons to route" in flat(capsys.readouterr().err)


def test_a_byte_order_mark_is_accepted(work):
    text = (work / "inputs.jsonl").read_text(encoding="utf-8")
    (work / "bom.jsonl").write_text("\ufeff" + text, encoding="utf-8")
    assert route(work, "bom.jsonl.out", source="bom.jsonl") == 0
    assert len(read_jsonl(work / "bom.jsonl.out")) == N_INPUTS


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_jobs_must_be_positive(work, jobs, capsys):
    with pytest.raises(SystemExit) as caught:
        route(work, "o.jsonl", "--jobs", jobs)
    assert caught.value.code == 2
    assert "--jobs" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith("hyper-ls 0.")


@pytest.mark.parametrize("budget", ["1.5", "-0.1", "lots"])
def test_budget_outside_zero_one_is_a_usage_error(work, budget, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["route", str(work / "inputs.jsonl"), "--budget", budget, "--out", "o.jsonl"])
    assert caught.value.code == 2
    assert "--budget" in capsys.readouterr().err


def test_unknown_strategy_is_a_usage_error(work, capsys):
    with pytest.raises(SystemExit) as caught:
        route(work, "o.jsonl", "--strategy", "magic")
    assert caught.value.code == 2
    assert "unknown strategy 'magic'" in capsys.readouterr().err


# -- simulate --------------------------------------------------------------------------------------

SIMULATED = ["random", "judge-consistency", "judge-error", "all-human", "all-judge"]


@pytest.fixture(scope="module")
def simulation(work) -> dict:
    write_records(work / "labelled.jsonl", make_records(90, seed=11, n_groups=6))
    args = ["simulate", str(work / "labelled.jsonl"), "--budgets", "0.25", "0.5"]
    args += ["--seeds", "2", "--strategies", *SIMULATED]
    args += ["--report", str(work / "report.json"), "--plot", str(work / "plot.png")]
    assert main(args) == 0
    return json.loads((work / "report.json").read_text())


def test_simulate_writes_a_report_and_a_plot(work, simulation):
    assert (work / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert simulation["n_comparisons"] == 90
    assert simulation["n_groups"] == 6
    assert simulation["seeds"] == 2
    rows = {(r["strategy"], r["budget"]): r for r in simulation["results"]}
    assert set(rows) == {(s, b) for s in SIMULATED for b in (0.25, 0.5)}
    for row in rows.values():
        for measure in ("capture_ratio", "label_accuracy", "downstream_accuracy"):
            assert set(row[measure]) == {"mean", "std", "min", "max"}
        assert 0.0 <= row["label_accuracy"]["mean"] <= 1.0


def test_simulate_respects_the_budget_of_each_strategy(simulation):
    rows = {(r["strategy"], r["budget"]): r for r in simulation["results"]}
    for budget in (0.25, 0.5):
        assert rows[("all-human", budget)]["human_share"] == 1.0
        assert rows[("all-judge", budget)]["human_share"] == 0.0
        assert (
            rows[("all-human", budget)]["label_accuracy"]["mean"]
            >= (rows[("all-judge", budget)]["label_accuracy"]["mean"])
        )
        for name in ("random", "judge-consistency", "judge-error"):
            # floor(budget x fold size) per fold: at most 5 folds x 1 comparison short
            share = rows[(name, budget)]["human_share"]
            assert budget - 5 / 90 <= share <= budget


def test_simulate_report_records_the_command(work, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["some-other-program", "--flag"])
    write_records(work / "small.jsonl", make_records(40, seed=12, n_groups=5))
    args = ["simulate", str(work / "small.jsonl"), "--budgets", "0.5", "--seeds", "1"]
    args += ["--strategies", "random", "--report", str(work / "small.json")]
    args += ["--plot", str(work / "small.png")]
    assert main(args) == 0
    report = json.loads((work / "small.json").read_text())
    assert report["command"] == " ".join(["hyper-ls", *args])


def test_simulate_needs_as_many_groups_as_folds(work, capsys):
    write_records(work / "few.jsonl", make_records(30, seed=13, n_groups=3))
    args = ["simulate", str(work / "few.jsonl"), "--strategies", "random", "--seeds", "1"]
    args += ["--report", str(work / "few.json"), "--plot", str(work / "few.png")]
    assert main(args) == 2
    assert "at least 5 groups" in flat(capsys.readouterr().err)


# -- the console script ------------------------------------------------------------------------


def script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_console_script_routes_and_reports_errors_without_traceback(work):
    model = ["--model", str(work / "model.json")]
    out = work / "script.jsonl"
    ok = script("route", str(work / "inputs.jsonl"), "--budget", "0.3", "--out", str(out), *model)
    assert ok.returncode == 0, ok.stderr
    assert route(work, "in-process.jsonl", *model) == 0
    assert out.read_bytes() == (work / "in-process.jsonl").read_bytes()

    bad = work / "script-bad.jsonl"
    bad.write_text(valid_line(0) + "\n" + '{"id": "x", "prompt": 7}\n', encoding="utf-8")
    failed = script("route", str(bad), "--budget", "0.3", "--out", str(work / "never.jsonl"))
    assert failed.returncode == 2
    assert "line 2: prompt: must be a string, got int" in flat(failed.stderr)
    assert "Traceback" not in failed.stderr
    assert not (work / "never.jsonl").exists()


def test_simulate_online_replays_campaigns_and_writes_a_report_and_a_plot(work):
    write_records(work / "campaign.jsonl", make_records(240, seed=21, n_groups=24))
    args = ["simulate", str(work / "campaign.jsonl"), "--online", "--budgets", "0.25", "0.5"]
    args += ["--seeds", "2", "--batch-size", "30", "--refit-every", "20"]
    args += ["--report", str(work / "online.json"), "--plot", str(work / "online.png")]
    assert main(args) == 0
    report = json.loads((work / "online.json").read_text())
    assert [c["settings"]["budget"] for c in report["campaigns"]] == [0.25, 0.5]
    for campaign in report["campaigns"]:
        policies = {row["policy"]: row for row in campaign["results"]}
        assert set(policies) == {"frozen", "online", "random", "judge-consistency"}
        assert policies["frozen"]["adopted_refits"]["max"] == 0
    assert (work / "online.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_online_records_the_audit_share_in_the_report(work):
    write_records(work / "audited.jsonl", make_records(240, seed=22, n_groups=24))
    args = ["simulate", str(work / "audited.jsonl"), "--online", "--budgets", "0.3"]
    args += ["--seeds", "1", "--batch-size", "40", "--audit-share", "0.2"]
    args += ["--report", str(work / "audited.json"), "--plot", str(work / "audited.png")]
    assert main(args) == 0
    report = json.loads((work / "audited.json").read_text())
    assert report["campaigns"][0]["settings"]["audit_share"] == 0.2
    with pytest.raises(SystemExit):
        main([*args[:-4], "--audit", "stratified"])  # the server never had targeted audits


def test_simulate_online_against_a_given_prior_replays_one_file_per_seed(work, capsys):
    from hyper_ls_backend.eval.synthetic import synthetic_records
    from hyper_ls_backend.priors import load_default_router

    for seed in range(2):
        write_records(work / f"synthetic_{seed}.jsonl", synthetic_records(60 + 20 * seed, seed))
    data = str(work / "synthetic_{seed}.jsonl")
    args = ["simulate", data, "--online", "--prior", "default", "--budgets", "0.3"]
    args += ["--seeds", "2", "--batch-size", "20", "--refit-every", "1000"]
    args += ["--report", str(work / "given.json"), "--plot", str(work / "given.png")]
    assert main(args) == 0
    campaign = json.loads((work / "given.json").read_text())["campaigns"][0]
    assert campaign["prior"] == load_default_router().version
    assert campaign["split"] == "none" and campaign["campaign_sizes"] == [60, 80]
    capsys.readouterr()
    assert main([*args[:3], *args[5:]]) == 2
    assert "needs --prior" in flat(capsys.readouterr().err)
    assert main(["simulate", str(work / "synthetic_0.jsonl"), "--prior", "default"]) == 2
    assert "for --online replays" in flat(capsys.readouterr().err)
    assert main([*args, "--split", "category"]) == 2
    assert "exclude each other" in flat(capsys.readouterr().err)


# -- a newcomer's first steps ------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "comparisons.jsonl"
TEST_TOOLS = {"pytest", "hypothesis", "schemathesis", "ruff", "psycopg", "redis"}


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_shipped_example_routes_at_the_readme_budget(tmp_path):
    out = tmp_path / "decisions.jsonl"
    done = script("route", str(EXAMPLE), "--budget", "0.25", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "20 comparisons: 5 to humans, 15 to the judge" in flat(done.stderr)
    records = {r["id"]: r for r in read_jsonl(out)}
    assert len(records) == 20
    # as the README says: the judge's failure and the four verdicts that changed with the order
    assert {i for i, r in records.items() if r["route"] == "human"} == {
        "ex03",
        "ex07",
        "ex13",
        "ex15",
        "ex18",
    }
    assert records["ex15"]["reasons"][0].startswith("judge failed")
    for i in ("ex03", "ex07", "ex13", "ex18"):
        assert "changed its answer when the order was swapped" in " ".join(records[i]["reasons"])
    assert all("human" not in r and "gold" not in r for r in read_jsonl(EXAMPLE))


def record_connect(monkeypatch) -> list[str]:
    """``connect_project`` replaced by a recorder of the label config it is given."""
    from hyper_ls_backend.ls import setup

    configs_given: list[str] = []

    def connect_project(settings, backend_url, project_id, title, label_config):
        configs_given.append(label_config)
        return 1

    monkeypatch.setattr(setup, "connect_project", connect_project)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "ls-token")
    return configs_given


OWN_CONFIG = "<View><!-- a user's own config --></View>"


def test_connect_reads_the_shipped_configs_by_name_from_any_directory(monkeypatch, tmp_path):
    from hyper_ls_backend.ls import configs

    given = record_connect(monkeypatch)
    monkeypatch.chdir(tmp_path)  # no label_config/ here
    (tmp_path / "mine.xml").write_text(OWN_CONFIG, encoding="utf-8")
    assert main(["connect"]) == 0
    for option in ("preference_3way", "preference_3way.xml", "mine.xml"):
        assert main(["connect", "--label-config", option]) == 0
    three_way = configs.read("preference_3way")
    assert given == [configs.read("preference_5point"), three_way, three_way, OWN_CONFIG]
    assert "A-is-clearly-better" in given[0]


def test_connect_says_how_the_judge_annotations_will_be_made(monkeypatch, capsys):
    record_connect(monkeypatch)
    assert main(["connect"]) == 0
    assert "one by one, as the user HyPER judge (set LABEL_STUDIO_JUDGE_API_KEY" in flat(
        capsys.readouterr().err
    )
    monkeypatch.setenv("LABEL_STUDIO_JUDGE_API_KEY", "judge-token")
    assert main(["connect"]) == 0
    message = flat(capsys.readouterr().err)
    assert "made in bulk, as the owner of LABEL_STUDIO_JUDGE_API_KEY" in message
    assert "judge-token" not in message


def test_connect_names_the_shipped_configs_when_the_label_config_is_unknown(monkeypatch, capsys):
    given = record_connect(monkeypatch)
    assert main(["connect", "--label-config", "preference_7point"]) == 2
    message = flat(capsys.readouterr().err)
    assert "--label-config preference_7point: no such file, nor a shipped config" in message
    assert "(preference_3way, preference_5point)" in message
    assert given == []


def test_connect_help_lists_every_shipped_config(capsys):
    from hyper_ls_backend.ls import configs

    with pytest.raises(SystemExit) as caught:
        main(["connect", "--help"])
    assert caught.value.code == 0
    shown = flat(capsys.readouterr().out)
    assert configs.names() == ["preference_3way", "preference_5point"]
    for name in configs.names():
        assert name in shown


def test_the_shipped_configs_are_package_data():
    from hyper_ls_backend.ls import configs

    patterns = pyproject()["tool"]["setuptools"]["package-data"]["hyper_ls_backend"]
    package = REPO / "hyper_ls_backend"
    on_disk = sorted(package.glob("ls/configs/*.xml"))
    assert [p.stem for p in on_disk] == configs.names()
    for path in on_disk:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_the_default_install_has_no_test_tools():
    project = pyproject()["project"]
    runtime = {requirement_name(r) for r in project["dependencies"]}
    assert not runtime & TEST_TOOLS
    extras = project["optional-dependencies"]
    assert {requirement_name(r) for r in extras["postgres"]} == {"psycopg"}
    assert {requirement_name(r) for r in extras["redis"]} == {"redis"}
    assert {"pytest", "ruff", "schemathesis"} <= {requirement_name(r) for r in extras["test"]}
    assert "hyper-ls-backend[redis,postgres]" in extras["test"]


def make_dry_run(target: str, venv: Path) -> str:
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    outer_make = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # when run by `make test`
    done = subprocess.run(
        ["make", "-n", "-C", str(REPO), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={k: v for k, v in os.environ.items() if k not in outer_make},
    )
    return done.stdout


def test_make_serve_installs_the_runtime_only_and_says_so(tmp_path):
    serve = make_dry_run("serve", tmp_path / "fresh")
    assert f"installing hyper-ls-backend into {tmp_path / 'fresh'}" in serve
    assert f"{tmp_path / 'fresh'}/bin/pip install --quiet -e .\n" in serve
    assert "[test]" not in serve
    assert "[test]" in make_dry_run("test", tmp_path / "fresh")


@pytest.mark.parametrize(
    ("variable", "url", "extra"),
    [
        ("DATABASE_URL", "postgresql+psycopg://hyper@db/hyper", "hyper-ls-backend[postgres]"),
        ("REDIS_URL", "redis://queue:6379/0", "hyper-ls-backend[redis]"),
    ],
)
def test_serve_names_the_extra_a_missing_driver_is_in(monkeypatch, capsys, variable, url, extra):
    import uvicorn

    from hyper_ls_backend import settings

    monkeypatch.setattr(settings, "find_spec", lambda name: None)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("served without a driver"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings.Settings().check_drivers()  # the default needs neither
    monkeypatch.setenv(variable, url)
    assert main(["serve"]) == 2
    message = flat(capsys.readouterr().err)
    assert f"{variable} needs the" in message
    assert f"pip install '{extra}'" in message


def test_a_killed_server_leaves_no_consumer_process_behind(tmp_path):
    """``hyper-ls serve``'s consumer process is forked from a fork server that lives as
    long as its children: SIGKILL to the server alone (not its process group) must still
    stop the consumer, and the fork server with it, instead of leaving them consuming."""
    from e2e.backend import BackendProcess, wait_for

    backend = BackendProcess({}, tmp_path / "model", tmp_path / "serve.log").start()
    try:
        wait_for(lambda: "consuming" in backend.logs(), timeout=120, what="the consumer")
        consumer = int(re.search(r"queue consumer process (\d+) consuming", backend.logs())[1])
        fork_server = parent_of(consumer)
        assert fork_server != backend.process.pid  # forked from the fork server
        os.kill(backend.process.pid, signal.SIGKILL)
        backend.process.wait(timeout=10)
        wait_for(
            lambda: not running(consumer) and not running(fork_server),
            timeout=30,
            what="the consumer and the fork server stopped",
        )
        assert "Shutting down gracefully" in backend.logs()
    finally:
        backend.stop()


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^PPid:\s+(\d+)", status, re.MULTILINE)[1])


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return re.search(r"^State:\s+Z", status, re.MULTILINE) is None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_status_without_a_backend_says_so_in_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    done = script("status", "--project", "1", "--backend-url", url)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: no backend at {url}: connection refused; start it with `make serve` "
        "(or `hyper-ls serve`), or pass --backend-url"
    ]


def test_the_test_markers_name_scripts_that_exist():
    markers = pyproject()["tool"]["pytest"]["ini_options"]["markers"]
    named = [m for m in markers if m.startswith(("postgres:", "redis:"))]
    assert len(named) == 2
    for marker in named:
        scripts = re.findall(r"scripts/[\w.-]+", marker)
        assert scripts and all((REPO / s).is_file() for s in scripts), marker


WHERE_LS_STARTS = (
    "README.md",
    "docker-compose.yml",
    "docs/**/*.md",
    "scripts/*",
    "tests/**/*.py",
    "benchmarks/*.py",
)
LS_START = re.compile(r"label-studio start|heartexlabs/label-studio:|\"--no-browser\"")


def test_every_label_studio_start_turns_off_the_version_check():
    """Label Studio asks the package index for its latest version at start unless told not to."""
    starts = [
        path
        for pattern in WHERE_LS_STARTS
        for path in REPO.glob(pattern)
        if path != Path(__file__).resolve() and LS_START.search(path.read_text(encoding="utf-8"))
    ]
    assert {p.relative_to(REPO).as_posix() for p in starts} >= {
        "README.md",
        "docker-compose.yml",
        "tests/e2e/label_studio.py",
    }
    for path in starts:
        text = path.read_text(encoding="utf-8")
        assert re.search(r"LATEST_VERSION_CHECK\W+false", text), path


class Refusing(BaseHTTPRequestHandler):
    """A Label Studio that refuses every token."""

    def do_GET(self) -> None:
        body = b'{"detail": "Invalid token."}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PATCH = do_GET

    def log_message(self, *args) -> None:
        pass


def test_connect_without_label_studio_or_with_a_bad_token_says_so(monkeypatch, capsys):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "ls-token")
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    assert main(["connect"]) == 2
    message = flat(capsys.readouterr().err)
    assert f"no Label Studio at {url}: connection refused; start it" in message

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        monkeypatch.setenv("LABEL_STUDIO_URL", url)
        assert main(["connect"]) == 2
    finally:
        server.shutdown()
    message = flat(capsys.readouterr().err)
    assert f"Label Studio at {url} answered 401: " in message
    assert "Invalid token." in message and "check LABEL_STUDIO_API_KEY)" in message
