"""The export's rows, built from real store records and Label Studio task dicts as its API
returns them (no Label Studio server: ``tests/e2e/test_export_e2e.py`` runs one)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from server.conftest import clean_env  # noqa: F401  (autouse)
from server.harness import LS_KEY, make_settings, serve

from hyper_ls_backend.cli import main
from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.core.dataset import read_comparisons
from hyper_ls_backend.core.policy import Decision, Route
from hyper_ls_backend.export import (
    Export,
    ExportError,
    ExportFormat,
    ExportRow,
    Source,
    StoredProject,
    build_export,
    open_store,
)
from hyper_ls_backend.ls.label_config import parse_label_config
from hyper_ls_backend.store import Store

CONFIG = """<View>
  <Text name="prompt" value="$prompt"/>
  <Text name="response_a" value="$response_a"/>
  <Text name="response_b" value="$response_b"/>
  <Choices name="preference" toName="prompt" choice="single-radio">
    <Choice value="A-is-clearly-better"/><Choice value="A-is-slightly-better"/>
    <Choice value="Tie"/>
    <Choice value="B-is-slightly-better"/><Choice value="B-is-clearly-better"/>
  </Choices>
</View>"""
P = 3
BACKEND, JUDGE, ANNOTATOR, REVIEWER = 1, 2, 3, 4
"""The account whose key the backend uses, the judge's own user its annotations are
credited to, and two people."""
EMAILS = {
    BACKEND: "admin@example.com",
    JUDGE: "hyper-judge@hyper-ls.invalid",
    ANNOTATOR: "ann@example.com",
    REVIEWER: "rev@example.com",
}
PREFILLED = "A-is-clearly-better"
"""What the backend pre-fills on the tasks the judge says A of."""
VERSION = "router-v1"


def data(key: str, **overrides: Any) -> dict[str, Any]:
    return {
        "prompt": f"How do I learn {key}?",
        "response_a": f"A: practise {key} daily.",
        "response_b": f"B: read about {key} once.",
        **overrides,
    }


def result(choice: str) -> list[dict[str, Any]]:
    return [
        {
            "from_name": "preference",
            "to_name": "prompt",
            "type": "choices",
            "value": {"choices": [choice]},
        }
    ]


def annotation(
    id_: int, choice: str, by: int, updated_by: int | None = None, **fields: Any
) -> dict[str, Any]:
    """An annotation as Label Studio lists it (it sets ``updated_by`` to whoever saved it)."""
    return {
        "id": id_,
        "result": result(choice),
        "completed_by": by,
        "updated_by": by if updated_by is None else updated_by,
        "was_cancelled": False,
        **fields,
    }


def verdict(label: str, confidence: float = 0.9) -> dict[str, Any]:
    return {"label": label, "model": "judge-1", "confidence": confidence, "consistent": True}


class Campaign:
    """A project in a real store: tasks received, judged, decided and written back."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(f"sqlite:///{tmp_path / 'state' / 'hyper.sqlite3'}")
        self.store.save_project(P, CONFIG, {})
        self.tasks: dict[int, dict[str, Any]] = {}

    def task(
        self,
        task_id: int,
        route: str | None,
        judge: str | None = "A",
        audit: bool = False,
        annotations: Sequence[dict[str, Any]] = (),
        prefill: int | None = None,
        prediction: str | None = PREFILLED,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Store task ``task_id`` as imported, judged (``judge``: its label) and decided
        (``route``; None: not yet); ``prefill``: the id of the backend's annotation. Returns
        the task as Label Studio lists it now, with ``annotations`` and, routed to the judge,
        the backend's ``prediction`` (None: deleted since)."""
        payload = {"id": task_id, "data": data(str(task_id))}
        self.store.record_tasks(P, [payload])
        comparison = {"id": str(task_id), **payload["data"], "tags": {"domain": "coding"}}
        self.store.save_comparison(P, task_id, comparison, None)
        if judge is not None:
            self.store.save_judge_output(
                P, task_id, verdict=verdict(judge), verdicts=[verdict(judge)], calls=[]
            )
        if route is not None:
            decision = Decision(
                str(task_id),
                Route(route),
                0.5,
                ["test"],
                audit=audit,
                judge_label=Label(judge) if judge else None,
                judge_confidence=0.9 if judge else None,
                model_version=VERSION,
            )
            self.store.decide(P, [task_id], lambda _ledger, _undecided: [decision])
            self.store.mark_written(P, {task_id: (task_id * 10, prefill)})
        current = {
            "id": task_id,
            "data": {**data(str(task_id), **overrides), "hyper_route": route},
            "annotations": list(annotations),
            "predictions": (
                [{"id": task_id * 10, "result": result(prediction)}]
                if route == "ai" and prediction
                else []
            ),
        }
        self.tasks[task_id] = current
        return current

    def export(self) -> Export:
        stored = StoredProject.read(self.store, P)
        config = parse_label_config(CONFIG)
        return build_export(P, list(self.tasks.values()), config, stored, EMAILS)


@pytest.fixture
def campaign(tmp_path: Path) -> Campaign:
    return Campaign(tmp_path)


def row_of(export: Export, task_id: int) -> ExportRow:
    (row,) = [r for r in export.rows if r.id == str(task_id)]
    return row


def prefill(id_: int, choice: str = PREFILLED, updated_by: int = BACKEND) -> dict[str, Any]:
    """The backend's annotation: credited to the judge's user, saved with the backend's key
    (Label Studio sets ``updated_by`` to whoever saved it last)."""
    return annotation(id_, choice, JUDGE, updated_by=updated_by)


def test_an_untouched_ai_prefill_is_the_judges_label(campaign: Campaign) -> None:
    campaign.task(1, "ai", judge="A", prefill=10, annotations=[prefill(10)])
    row = row_of(campaign.export(), 1)
    assert (row.label, row.source, row.votes, row.human) == (Label.A, Source.JUDGE, [], [])
    assert (row.route, row.router_version, row.ai_label, row.ai_confidence) == (
        Route.AI,
        VERSION,
        Label.A,
        0.9,
    )
    assert row.judge.label == Label.A and [j.model for j in row.judges] == ["judge-1"]
    assert (row.score, row.reasons) == (0.5, ["test"])  # with the figures hyper_reason drops


def test_a_person_who_changes_the_prefill_gives_a_human_label_credited_to_them(
    campaign: Campaign,
) -> None:
    campaign.task(1, "ai", prefill=10, annotations=[prefill(10, "B-is-slightly-better", ANNOTATOR)])
    # a change of strength only is a correction too
    campaign.task(2, "ai", prefill=20, annotations=[prefill(20, "A-is-slightly-better", REVIEWER)])
    # changed by someone using the backend's own account
    campaign.task(3, "ai", prefill=30, annotations=[prefill(30, "Tie")])
    # the backend's prediction deleted since: the judges' label tells a change
    campaign.task(4, "ai", prefill=40, prediction=None, annotations=[prefill(40, "Tie", REVIEWER)])
    export = campaign.export()

    first = row_of(export, 1)
    assert (first.label, first.source, first.human) == (Label.B, Source.HUMAN, [Label.B])
    (vote,) = first.votes
    assert (vote.annotator_id, vote.annotator_email, vote.edited_prefill, vote.choice) == (
        ANNOTATOR,
        "ann@example.com",
        True,
        "B-is-slightly-better",
    )
    second, third, fourth = row_of(export, 2), row_of(export, 3), row_of(export, 4)
    assert (second.label, second.source, second.votes[0].choice) == (
        Label.A,
        Source.HUMAN,
        "A-is-slightly-better",
    )
    assert (third.label, third.votes[0].annotator_email) == (Label.TIE, "admin@example.com")
    assert (fourth.label, fourth.votes[0].annotator_id) == (Label.TIE, REVIEWER)


def test_a_prefill_resubmitted_unchanged_keeps_the_judges_label(campaign: Campaign) -> None:
    campaign.task(1, "ai", prefill=10, annotations=[prefill(10, updated_by=REVIEWER)])
    campaign.task(2, "ai", prefill=20, prediction=None, annotations=[prefill(20)])
    export = campaign.export()
    for task_id in (1, 2):
        row = row_of(export, task_id)
        assert (row.label, row.source, row.votes) == (Label.A, Source.JUDGE, [])


def test_a_human_annotation_beside_the_prefill_overrides_the_judge(campaign: Campaign) -> None:
    override = annotation(101, "B-is-clearly-better", ANNOTATOR)
    campaign.task(1, "ai", judge="A", prefill=10, annotations=[prefill(10), override])
    row = row_of(campaign.export(), 1)
    assert (row.label, row.source, row.human) == (Label.B, Source.HUMAN, [Label.B])
    assert [v.annotation_id for v in row.votes] == [101]


def test_human_and_audit_labels_and_tasks_still_waiting(campaign: Campaign) -> None:
    campaign.task(1, "human", annotations=[annotation(11, "B-is-clearly-better", ANNOTATOR)])
    campaign.task(2, "human", audit=True, annotations=[annotation(12, "Tie", REVIEWER)])
    campaign.task(3, "human")
    campaign.task(4, "human", audit=True)
    campaign.task(5, None, judge=None)  # received, not decided yet
    cancelled = annotation(16, "A-is-clearly-better", ANNOTATOR, was_cancelled=True)
    campaign.task(6, "human", annotations=[cancelled])
    export = campaign.export()

    rows = {int(r.id): r for r in export.rows}
    assert (rows[1].label, rows[1].source, rows[1].votes[0].annotator_email) == (
        Label.B,
        Source.HUMAN,
        "ann@example.com",
    )
    assert (rows[2].label, rows[2].source, rows[2].audit) == (Label.TIE, Source.AUDIT, True)
    for waiting in (3, 4, 5, 6):
        assert (rows[waiting].label, rows[waiting].source) == (None, None), waiting
    assert (rows[5].route, rows[5].router_version, rows[5].judge) == (None, None, None)
    summary = export.summary(ExportFormat.PAIRS)
    assert (summary.tasks, summary.written, summary.human, summary.audit) == (6, 6, 1, 1)
    assert (summary.judge, summary.unlabelled) == (0, 4)


def test_split_human_votes_are_a_tie_and_every_vote_is_kept(campaign: Campaign) -> None:
    votes = [
        annotation(11, "A-is-clearly-better", ANNOTATOR),
        annotation(12, "B-is-clearly-better", REVIEWER),
    ]
    campaign.task(1, "human", annotations=votes)
    row = row_of(campaign.export(), 1)
    assert (row.label, row.human) == (Label.TIE, [Label.A, Label.B])
    assert [v.annotator_id for v in row.votes] == [ANNOTATOR, REVIEWER]


def test_a_deleted_prefill_leaves_no_label_and_predict_mode_keeps_the_judges(
    campaign: Campaign,
) -> None:
    campaign.task(1, "ai", judge="B", prefill=100, annotations=[])  # its annotation deleted
    campaign.task(2, "ai", judge="B", prefill=None)  # predict mode: a prediction only
    export = campaign.export()
    assert row_of(export, 1).label is None
    assert (row_of(export, 2).label, row_of(export, 2).source) == (Label.B, Source.JUDGE)


def test_rows_carry_the_current_data_and_the_taggers_tags(campaign: Campaign) -> None:
    campaign.task(1, "ai", prefill=None, response_b="B: edited in Label Studio.", tags={"x": "y"})
    row = row_of(campaign.export(), 1)
    assert row.response_b == "B: edited in Label Studio."
    assert row.tags == {"domain": "coding", "x": "y"}


def test_an_unreadable_task_is_left_out_and_counted(campaign: Campaign) -> None:
    campaign.task(1, "ai", prefill=None)
    campaign.task(2, "human", prompt="   ")
    export = campaign.export()
    assert [r.id for r in export.rows] == ["1"]
    assert "empty" in export.unreadable[2]
    assert export.summary(ExportFormat.PAIRS).unreadable == 1


def test_pairs_read_back_as_comparisons_with_human_votes_and_verdicts(
    campaign: Campaign, tmp_path: Path
) -> None:
    campaign.task(1, "human", annotations=[annotation(11, "B-is-clearly-better", ANNOTATOR)])
    campaign.task(2, "ai", judge="A", prefill=None)
    path = tmp_path / "pairs.jsonl"
    campaign.export().write(path, ExportFormat.PAIRS)

    first, second = read_comparisons(path)
    assert (first.id, first.human, first.judge.label) == ("1", [Label.B], Label.A)
    assert (second.id, second.human, second.judge.label) == ("2", [], Label.A)
    record = json.loads(path.read_text().splitlines()[0])
    assert {"label", "source", "votes", "route", "audit", "router_version"} <= set(record)
    assert (record["label"], record["source"]) == ("B", "human")
    assert record["votes"][0]["annotator_email"] == "ann@example.com"


def test_trl_rows_have_a_chosen_side_and_ties_unlabelled_and_multi_turn_are_counted(
    campaign: Campaign, tmp_path: Path
) -> None:
    campaign.task(1, "human", annotations=[annotation(11, "B-is-clearly-better", ANNOTATOR)])
    campaign.task(2, "ai", judge="A", prefill=None)
    campaign.task(3, "ai", judge="tie", prefill=None)
    campaign.task(4, "human")
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    campaign.task(5, "ai", judge="A", prefill=None, context=turns)
    export = campaign.export()
    path = tmp_path / "trl.jsonl"
    summary = export.write(path, ExportFormat.TRL)

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [
        {
            "prompt": "How do I learn 1?",
            "chosen": "B: read about 1 once.",
            "rejected": "A: practise 1 daily.",
        },
        {
            "prompt": "How do I learn 2?",
            "chosen": "A: practise 2 daily.",
            "rejected": "B: read about 2 once.",
        },
    ]
    assert (summary.tasks, summary.written, summary.ties, summary.unlabelled) == (5, 2, 1, 1)
    assert summary.multi_turn == 1
    assert "1 ties" in summary.describe() and "1 multi-turn" in summary.describe()
    assert export.jsonl(ExportFormat.TRL) == path.read_text()


def test_a_project_the_store_does_not_know_and_a_missing_store_are_errors(
    campaign: Campaign, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="project 99 is not in the backend's store"):
        StoredProject.read(campaign.store, 99)
    missing = tmp_path / "elsewhere" / "hyper.sqlite3"
    with pytest.raises(ExportError, match="no backend state at"):
        open_store(f"sqlite:///{missing}")
    assert not missing.parent.exists()


# -- GET /export without Label Studio -------------------------------------------------------


def test_the_dashboard_links_the_export_which_needs_label_studio_and_a_known_project(
    tmp_path: Path,
) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        model.store.save_project(P, CONFIG, {})
        response = client.get("/export", params={"project": P})
        assert response.status_code == 409
        assert "LABEL_STUDIO_API_KEY" in response.json()["detail"]
        assert client.get("/export", params={"project": P, "format": "csv"}).status_code == 422
        page = client.get("/dashboard", params={"project": P}).text
        for fmt in ExportFormat:
            assert f"href='export?project={P}&amp;format={fmt}' download" in page
    settings = make_settings(tmp_path, label_studio_api_key=LS_KEY)
    with serve(settings) as (client, _model):
        response = client.get("/export", params={"project": 404})
        assert response.status_code == 404


def test_the_export_route_asks_for_basic_auth(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, basic_auth_user="u", basic_auth_pass="secret-pass")
    with serve(settings) as (client, _model):
        assert client.get("/export", params={"project": P}).status_code == 401


# -- hyper-ls export's errors -----------------------------------------------------------------


def test_the_command_says_what_to_set_and_never_makes_an_empty_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl"
    argv = ["export", "--project", str(P), "--out", str(out)]
    assert main(argv) == 2
    assert "set LABEL_STUDIO_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", LS_KEY)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "not_the_backends"))
    assert main([*argv, "--format", "trl"]) == 2
    error = capsys.readouterr().err
    assert "no backend state at" in error and LS_KEY not in error
    assert not (tmp_path / "not_the_backends").exists() and not out.exists()
