"""A replayed campaign: a labelled dataset imported into a real Label Studio, routed by the
real backend against replay judges (``hyper_ls_backend/eval/replay_judge.py``), and
measured on what Label Studio holds afterwards.

Shared by ``test_replay_e2e.py`` and ``scripts/replay_campaign.py``. The measures follow
``eval/crossval.py``: a judge error is a comparison whose pre-filled judge label (the
replayed view's ``judge_label``) differs from its first human vote; capture is the share of
errors routed to humans divided by the share of tasks routed to humans (1.0 = random);
final label accuracy scores the AI-routed tasks' pre-filled label and the human-routed
tasks' first human vote against the reference label.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from label_studio_sdk import LabelStudio

from e2e.backend import wait_for
from e2e.reading import annotations, as_dict, choice_of, ls_tasks, predictions
from hyper_ls_backend.core.comparison import FIVE_POINT_SCALE, Comparison, JudgeVerdict, Label
from hyper_ls_backend.core.dataset import write_jsonl
from hyper_ls_backend.eval.replay_judge import (
    ReplayError,
    RunningReplayJudge,
    answer_for,
)
from hyper_ls_backend.lm.judge import UNSWAP, JudgeCall, combine
from hyper_ls_backend.ls.client import REASON_FIELD, ROUTE_FIELD

HYPER_LS = Path(sys.executable).parent / "hyper-ls"
ROW_ID = "row_id"
"""Where each task's ``meta`` keeps the id of the dataset row it was imported from."""


def replayed_view(rows: Sequence[Comparison], judge_indexes: Sequence[int]) -> list[Comparison]:
    """The rows as the backend sees them when the replay judges are ``judge_indexes`` of each
    row's panel: those verdicts only, the first as the primary."""
    view = []
    for row in rows:
        verdicts = row.judges or ([row.judge] if row.judge is not None else [])
        chosen = [verdicts[i] for i in judge_indexes]
        view.append(row.with_judge(chosen[0]) if len(chosen) == 1 else row.with_panel(chosen))
    return view


def served_view(rows: Sequence[Comparison], judge_indexes: Sequence[int]) -> list[Comparison]:
    """The rows with the verdicts the backend makes of the replay judges' answers (each
    judge's two answers as served, combined by the backend's own ``combine``): this view
    routes offline on exactly what it saw."""
    view = []
    for row, replayed in zip(rows, replayed_view(rows, judge_indexes), strict=True):
        verdicts = [
            combine(
                [
                    JudgeCall(swapped=swapped, preference=_served(verdict, swapped))
                    for swapped in (False, True)
                ],
                verdict.model or "judge",
            )
            for verdict in replayed.judges or [replayed.judge]
        ]
        view.append(row.with_judge(verdicts[0]) if len(verdicts) == 1 else row.with_panel(verdicts))
    return view


def _served(verdict: JudgeVerdict, swapped: bool) -> str | None:
    """A replay judge's answer in the row's orientation; None where it answers an error."""
    try:
        answer = answer_for(verdict, swapped)
    except ReplayError:
        return None
    return UNSWAP[answer] if swapped else answer


def judge_model(verdict: JudgeVerdict | None, index: int) -> str:
    """The model name a replay judge is configured with: distinct per judge index."""
    name = verdict.model if verdict is not None and verdict.model else f"judge-{index}"
    return f"replay-{name}"


def judge_env(rows: Sequence[Comparison], servers: Sequence[RunningReplayJudge]) -> dict[str, str]:
    """The backend's judge settings for the replay servers: one judge through
    ``HYPER_JUDGE_*``, several as a ``HYPER_JUDGES`` panel (primary first)."""
    models = [
        judge_model(server.judge.verdict(rows[0]), server.judge.judge_index) for server in servers
    ]
    if len(servers) == 1:
        return {
            "HYPER_JUDGE_PROVIDER": "openai",
            "HYPER_JUDGE_BASE_URL": servers[0].base_url,
            "HYPER_JUDGE_MODEL": models[0],
        }
    panel = [
        {"provider": "openai", "model": model, "base_url": server.base_url}
        for model, server in zip(models, servers, strict=True)
    ]
    return {"HYPER_JUDGES": json.dumps(panel)}


def import_rows(client: LabelStudio, project_id: int, rows: Sequence[Comparison]) -> float:
    """Import every row as a task in one request (one TASKS_CREATED webhook), the row id in
    the task's ``meta``; returns the seconds the import took."""
    tasks = [
        {
            "data": {"prompt": r.prompt, "response_a": r.response_a, "response_b": r.response_b},
            "meta": {ROW_ID: r.id},
        }
        for r in rows
    ]
    start = time.monotonic()
    response = client.projects.import_tasks(id=project_id, request=tasks)
    assert response.task_count == len(rows), response
    return time.monotonic() - start


@dataclass(frozen=True)
class TaskOutcome:
    """One task as Label Studio holds it after routing."""

    task_id: int
    row_id: str
    route: str
    reason: str
    prefilled: str | None
    """The 5-point choice of the backend's annotation (else its prediction); None when the
    task carries neither."""
    prediction_score: float | None

    @property
    def prefilled_label(self) -> Label | None:
        return FIVE_POINT_SCALE[self.prefilled] if self.prefilled is not None else None


def wait_until_written(
    client: LabelStudio, project_id: int, n: int, timeout: float
) -> tuple[list[TaskOutcome], dict[str, float]]:
    """Poll Label Studio until all ``n`` tasks show a route (the backend writes the route
    last, after an AI task's prediction and annotation); returns the outcomes and the
    seconds until the first task showed a route (the import judged and decided, its first
    write-back done) and until all did."""
    start = time.monotonic()
    seconds: dict[str, float] = {}

    def routed() -> list[Any] | None:
        tasks = ls_tasks(client, project_id)
        shown = sum(ROUTE_FIELD in t.data for t in tasks)
        if shown and "first_routed" not in seconds:
            seconds["first_routed"] = time.monotonic() - start
        return tasks if shown >= n else None

    tasks = wait_for(routed, timeout, interval=2.0, what=f"{n} routed tasks")
    seconds["all_routed"] = time.monotonic() - start
    return [outcome_of(task) for task in tasks], seconds


def outcome_of(task: Any) -> TaskOutcome:
    annotated, predicted = annotations(task), predictions(task)
    source = annotated or predicted
    return TaskOutcome(
        task_id=task.id,
        row_id=str(as_dict(task).get("meta", {})[ROW_ID]),
        route=task.data[ROUTE_FIELD],
        reason=task.data.get(REASON_FIELD, ""),
        prefilled=choice_of(source[0]["result"]) if source else None,
        prediction_score=predicted[0].get("score") if predicted else None,
    )


def offline_routes(
    view: Sequence[Comparison], budget: float, work_dir: Path, name: str
) -> dict[str, str]:
    """``hyper-ls route`` on ``view`` written to ``work_dir/NAME.jsonl``: row id -> route."""
    data, out = work_dir / f"{name}.jsonl", work_dir / f"{name}_decisions.jsonl"
    write_jsonl(data, (c.model_dump(mode="json", exclude_none=True) for c in view))
    command = [str(HYPER_LS), "route", str(data), "--budget", str(budget), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    lines = out.read_text(encoding="utf-8").splitlines()
    return {record["id"]: record["route"] for record in map(json.loads, lines)}


def judge_wrong(comparison: Comparison) -> bool:
    label, human = comparison.judge_label, comparison.first_human
    return label is not None and human is not None and label != human


def capture_ratio(view: Sequence[Comparison], to_human: Sequence[bool]) -> float:
    """Share of judge errors routed to humans over the share of tasks routed to humans."""
    wrong = [judge_wrong(c) for c in view]
    share = sum(to_human) / len(view)
    caught = sum(w and h for w, h in zip(wrong, to_human, strict=True))
    return (caught / max(sum(wrong), 1)) / share if share else 0.0


def order_inconsistent(comparison: Comparison) -> bool:
    """The primary judge changed its answer when the order was swapped."""
    return comparison.judge is not None and comparison.judge.consistent is False


@dataclass(frozen=True)
class CampaignReport:
    """What one replayed campaign did, measured on Label Studio's tasks."""

    n: int
    budget: float
    budget_floor: int
    human: int
    judge_errors: int
    capture_in_label_studio: float
    capture_offline_route: float
    """``hyper-ls route`` on the replayed view of the file."""
    capture_offline_served: float
    """``hyper-ls route`` on the verdicts the backend made of the replayed answers."""
    offline_human: int
    final_label_accuracy: float
    final_label_accuracy_offline: float
    ai_prefill_agrees_with_view: float
    """Share of AI-routed tasks whose pre-filled label is the replayed view's judge label."""
    inconsistent_ai: int
    consistent_human: int
    inconsistent_total: int
    audits: int
    seconds: dict[str, float]

    @property
    def inconsistent_ai_while_humans_took_consistent(self) -> bool:
        return self.inconsistent_ai > 0 and self.consistent_human > 0

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "inconsistent_ai_while_humans_took_consistent": (
                self.inconsistent_ai_while_humans_took_consistent
            ),
        }


def measure(
    view: Sequence[Comparison],
    outcomes: Sequence[TaskOutcome],
    offline: dict[str, str],
    offline_served: dict[str, str],
    budget: float,
    seconds: dict[str, float],
) -> CampaignReport:
    by_row = {o.row_id: o for o in outcomes}
    assert sorted(by_row) == sorted(c.id for c in view), "tasks and rows differ"
    to_human = [by_row[c.id].route == "human" for c in view]
    offline_human = [offline[c.id] == "human" for c in view]
    ai = [(c, by_row[c.id]) for c, h in zip(view, to_human, strict=True) if not h]
    return CampaignReport(
        n=len(view),
        budget=budget,
        budget_floor=math.floor(round(budget * len(view), 9)),
        human=sum(to_human),
        judge_errors=sum(judge_wrong(c) for c in view),
        capture_in_label_studio=capture_ratio(view, to_human),
        capture_offline_route=capture_ratio(view, offline_human),
        capture_offline_served=capture_ratio(view, [offline_served[c.id] == "human" for c in view]),
        offline_human=sum(offline_human),
        final_label_accuracy=_accuracy(
            view, to_human, [by_row[c.id].prefilled_label for c in view]
        ),
        final_label_accuracy_offline=_accuracy(view, offline_human, [c.judge_label for c in view]),
        ai_prefill_agrees_with_view=(
            sum(o.prefilled_label == c.judge_label for c, o in ai) / len(ai) if ai else 1.0
        ),
        inconsistent_ai=sum(order_inconsistent(c) for c, _ in ai),
        consistent_human=sum(
            not order_inconsistent(c) for c, h in zip(view, to_human, strict=True) if h
        ),
        inconsistent_total=sum(order_inconsistent(c) for c in view),
        audits=sum(o.route == "human" and o.reason.startswith("human: audit") for o in outcomes),
        seconds=seconds,
    )


def _accuracy(
    view: Sequence[Comparison], to_human: Sequence[bool], ai_labels: Sequence[Label | None]
) -> float:
    """Accuracy against the reference label of the final labels: a human-routed row's first
    human vote, an AI-routed row's ``ai_labels`` entry (None, no label, counts as wrong)."""
    scored = [
        (c.first_human if human else label) == c.reference_label
        for c, human, label in zip(view, to_human, ai_labels, strict=True)
        if c.reference_label is not None
    ]
    return sum(scored) / len(scored)
