"""End to end with replayed judges (issue 7): a real Label Studio, the real backend as a
process, and judge servers that replay the PRD set's recorded verdicts
(``hyper_ls_backend/eval/replay_judge.py``), measured on what Label Studio holds.

The whole campaign of ``scripts/replay_campaign.py`` in test form; ``tests/e2e/replay.py``
holds the shared steps and measures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from conftest import data_dir
from label_studio_sdk import LabelStudio
from processes import unavailable

from e2e.conftest import Connect, StartBackend
from e2e.replay import (
    import_rows,
    judge_env,
    judge_model,
    measure,
    offline_routes,
    replayed_view,
    served_view,
    wait_until_written,
)
from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.dataset import read_comparisons
from hyper_ls_backend.eval.replay_judge import RunningReplayJudge, start_replay_judge

pytestmark = [pytest.mark.label_studio, pytest.mark.data]

PRD = "prd_vicuna80_panel.jsonl"
BUDGET = 0.25
ROUTING_TIMEOUT = 900.0
REPLAY_ENV = {"HYPER_AUDIT_SHARE": "0", "HYPER_JUDGE_TIMEOUT": "30"}
"""No audits (``hyper-ls route`` draws none either); a timeout no replay answer comes near
on a loaded machine."""


@pytest.fixture(scope="module")
def prd() -> list[Comparison]:
    """The PRD panel set. Skipped locally when absent; a failure under CI."""
    path = data_dir() / PRD
    if not path.exists():
        unavailable(f"{path} not found (set HYPER_DATA_DIR)")
    return read_comparisons(path)


StartReplay = Callable[[Sequence[Comparison], Sequence[int]], list[RunningReplayJudge]]


@pytest.fixture
def replay_judges() -> Iterator[StartReplay]:
    """Starts one replay judge per judge index; all are stopped at teardown."""
    started: list[RunningReplayJudge] = []

    def start(rows: Sequence[Comparison], indexes: Sequence[int]) -> list[RunningReplayJudge]:
        servers = [start_replay_judge(rows, judge_index=i) for i in indexes]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop()


def test_one_import_of_the_prd_set_spends_the_budget_exactly_and_captures_as_route_does(
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
    prd: list[Comparison],
    replay_judges: StartReplay,
    tmp_path: Path,
) -> None:
    (server,) = replay_judges(prd, [0])  # GPT-4, in both orders
    backend = start_backend(HYPER_BUDGET=str(BUDGET), **REPLAY_ENV, **judge_env(prd, [server]))
    project_id = connect(backend, "e2e: PRD replayed")

    import_s = import_rows(ls_client, project_id, prd)
    outcomes, waited = wait_until_written(ls_client, project_id, len(prd), ROUTING_TIMEOUT)
    view = replayed_view(prd, [0])
    offline = offline_routes(view, BUDGET, tmp_path, "replayed")
    served = offline_routes(served_view(prd, [0]), BUDGET, tmp_path, "served")
    report = measure(view, outcomes, offline, served, BUDGET, {"import": import_s, **waited})
    print(f"\n[replay PRD] {json.dumps(report.as_json())}")

    assert server.judge.counts == {"answered": 2 * len(prd)}  # each task once, both orders
    assert report.human == report.budget_floor == 180
    # What Label Studio holds captures as `hyper-ls route` on the same file does, and as
    # `route` on the verdicts the backend made of the replayed answers (the same verdicts:
    # orders that disagree are a tie in the backend as in the pairs format).
    assert abs(report.capture_in_label_studio - report.capture_offline_route) <= 0.05
    assert abs(report.capture_in_label_studio - report.capture_offline_served) <= 0.05
    assert not report.inconsistent_ai_while_humans_took_consistent, report
    # more order flips than the budget: humans take only flips, the rest say so
    assert report.inconsistent_total > report.human
    assert report.consistent_human == 0


# -- a two-judge panel ------------------------------------------------------------------------

PANEL = (0, 1)
"""GPT-4 (primary) and GPT-3.5."""


def panel_kind(row: Comparison) -> str | None:
    """How GPT-4 and GPT-3.5 relate on ``row``: ``agree`` (same side, each in both orders),
    ``opposite`` (each keeps its answer in both orders, opposite sides), ``tie`` (GPT-4
    picks a side in both orders, GPT-3.5 a tie), ``flip`` (GPT-4 flips with the order,
    GPT-3.5 keeps a side: the panel's label is then GPT-3.5's); None for the rest."""
    first, second = row.judges[0], row.judges[1]
    sides = {first.label.value, second.label.value}
    if first.consistent and second.consistent:
        if sides == {"A", "B"}:
            return "opposite"
        if len(sides) == 1 and "tie" not in sides:
            return "agree"
        return "tie" if first.label.value != "tie" and second.label.value == "tie" else None
    if first.consistent is False and second.consistent and second.label.value != "tie":
        return "flip"
    return None


PANEL_ROWS = {"opposite": 6, "tie": 4, "flip": 4, "agree": 46}


def panel_subset(rows: Sequence[Comparison]) -> tuple[list[Comparison], set[str]]:
    """60 PRD rows (``PANEL_ROWS`` of each kind, the first in file order) and the ids of
    the 14 the two judges disagree on."""
    chosen: dict[str, list[Comparison]] = {kind: [] for kind in PANEL_ROWS}
    for row in rows:
        kind = panel_kind(row)
        if kind is not None and len(chosen[kind]) < PANEL_ROWS[kind]:
            chosen[kind].append(row)
    subset = [row for row in rows if any(row in group for group in chosen.values())]
    assert len(subset) == sum(PANEL_ROWS.values())
    disagree = {row.id for kind, group in chosen.items() if kind != "agree" for row in group}
    return subset, disagree


def test_a_two_judge_panel_is_stored_shown_prefilled_and_its_disagreements_go_to_humans(
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
    prd: list[Comparison],
    replay_judges: StartReplay,
) -> None:
    rows, disagree = panel_subset(prd)
    servers = replay_judges(rows, PANEL)
    models = [judge_model(rows[0].judges[i], i) for i in PANEL]
    expected = {c.id: c.judge_label for c in served_view(rows, PANEL)}

    # budget 0: every task is AI-labelled, with the panel's label
    prefill = start_backend(HYPER_BUDGET="0", **REPLAY_ENV, **judge_env(rows, servers))
    prefill_project = connect(prefill, "e2e: panel pre-fill")
    import_rows(ls_client, prefill_project, rows)
    outcomes, _ = wait_until_written(ls_client, prefill_project, len(rows), ROUTING_TIMEOUT)
    assert {o.route for o in outcomes} == {"ai"}, {o.reason for o in outcomes}
    assert {o.row_id: o.prefilled_label for o in outcomes} == expected
    flips = [r for r in rows if r.judges[0].consistent is False]
    assert all(expected[r.id] != r.judges[0].label for r in flips)  # the panel's, not GPT-4's

    # a budget that fits every disagreement: humans get all of them first
    routed = start_backend(HYPER_BUDGET=str(BUDGET), **REPLAY_ENV, **judge_env(rows, servers))
    project_id = connect(routed, "e2e: panel routing")
    import_rows(ls_client, project_id, rows)
    outcomes, waited = wait_until_written(ls_client, project_id, len(rows), ROUTING_TIMEOUT)
    print(f"\n[replay panel] {len(rows)} tasks, {len(disagree)} disagreements, {waited}")
    human = {o.row_id for o in outcomes if o.route == "human"}
    assert len(human) == int(BUDGET * len(rows)) >= len(disagree)
    assert disagree <= human
    for server in servers:
        assert server.judge.counts == {"answered": 2 * 2 * len(rows)}  # two projects

    # both verdicts are stored and shown: every task's reason in Label Studio names each
    # judge with its own answer, and the backend's database holds both verdicts
    for outcome in outcomes:
        assert all(f"{model} " in outcome.reason for model in models), outcome.reason
    stored = routed.query("SELECT verdicts FROM judge_outputs")
    assert len(stored) == len(rows)
    assert all([v["model"] for v in json.loads(row[0])] == models for row in stored)
