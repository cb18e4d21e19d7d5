"""Acceptance test of ``hyper-ls export`` (issue 9, item 6), end to end.

A real Label Studio, the real backend with the scripted judge, and a small campaign: 25
tasks imported and routed, an annotator (a second Label Studio user) labels all but one of
the human queue, corrects one AI pre-fill in place, and a task's response is edited after
routing. The export, read back, must hold one row per task with the label and source the
test itself made, the same rows from the command, from the function reading Label Studio
page by page, and from the backend's ``GET /export``; the TRL file must load with the
``datasets`` JSON loader into exactly TRL's standard preference columns.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from label_studio_sdk import LabelStudio

from e2e.backend import HYPER_LS, BackendProcess, comparison_data
from e2e.conftest import Connect, StartBackend
from e2e.label_studio import LabelStudioServer
from e2e.reading import annotations, import_tasks, plan_of, wait_idle, wait_until_routed
from hyper_ls_backend.core.dataset import read_comparisons
from hyper_ls_backend.core.policy import AUDIT_REASON
from hyper_ls_backend.export import ExportFormat, export_project, open_store
from hyper_ls_backend.ls.client import REASON_FIELD, ROUTE_FIELD

pytestmark = pytest.mark.label_studio

ANNOTATOR_EMAIL = "export-annotator@example.com"
PLANS = ["a-clear", "b-slight", "tie", "a-slight", "biased"]
JUDGE_LABEL = {"a-clear": "A", "a-slight": "A", "b-slight": "B", "tie": "tie", "biased": "tie"}
"""The judges' label by plan (a position-biased judge's contradicting answers are a tie)."""
LABEL_OF = {"A-is-slightly-better": "A", "B-is-clearly-better": "B", "B-is-slightly-better": "B"}


def result(choice: str) -> list[dict[str, Any]]:
    return [
        {
            "from_name": "preference",
            "to_name": "prompt",
            "type": "choices",
            "value": {"choices": [choice]},
        }
    ]


def run_export(backend: BackendProcess, project_id: int, out: Path, fmt: str) -> str:
    """``hyper-ls export`` with the backend's own environment (its MODEL_DIR, Label
    Studio's URL and key); returns its summary line."""
    done = subprocess.run(
        [str(HYPER_LS), "export", "--project", str(project_id), "--out", str(out), "--format", fmt],
        env=backend.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_the_export_has_one_row_per_task_with_its_label_source_and_annotator(
    label_studio: LabelStudioServer,
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
    tmp_path: Path,
) -> None:
    n = 25
    backend = start_backend(HYPER_BUDGET="0.4", HYPER_AUDIT_SHARE="0.3")
    project_id = connect(backend, "e2e: export")
    annotator = LabelStudio(
        base_url=label_studio.url, api_key=label_studio.create_user(ANNOTATOR_EMAIL)
    )
    annotator_id = annotator.users.whoami().id
    imported = import_tasks(
        ls_client, project_id, [comparison_data(f"x{i}", PLANS[i % len(PLANS)]) for i in range(n)]
    )
    tasks, _ = wait_until_routed(ls_client, project_id, n, timeout=120)
    wait_idle(backend)

    # What the test makes happen, task by task: (label, source, annotator e-mail).
    expected: dict[int, tuple[str | None, str | None, str | None]] = {}
    human = sorted((t for t in tasks if t.data[ROUTE_FIELD] == "human"), key=lambda t: t.id)
    ai = sorted((t for t in tasks if t.data[ROUTE_FIELD] == "ai"), key=lambda t: t.id)
    audits = [t for t in human if AUDIT_REASON in t.data[REASON_FIELD]]
    picked = [t for t in human if t not in audits]
    assert audits and len(picked) >= 2, [t.data[REASON_FIELD] for t in human]
    waiting = picked[-1]  # the one human-routed task nobody labels
    expected[waiting.id] = (None, None, None)
    for k, task in enumerate(t for t in human if t is not waiting):
        choice = "B-is-clearly-better" if k % 2 else "A-is-slightly-better"
        annotator.annotations.create(id=task.id, result=result(choice), ground_truth=False)
        source = "audit" if task in audits else "human"
        expected[task.id] = (LABEL_OF[choice], source, ANNOTATOR_EMAIL)
    for task in ai:
        expected[task.id] = (JUDGE_LABEL[plan_of(task)], "judge", None)
    # The annotator corrects one AI pre-fill in place (the judge said A) ...
    corrected = next(t for t in ai if plan_of(t) == "a-clear")
    (prefill,) = annotations(corrected)
    annotator.annotations.update(id=prefill["id"], result=result("B-is-slightly-better"))
    expected[corrected.id] = ("B", "human", ANNOTATOR_EMAIL)
    # ... and someone edits another AI task's response after it was routed.
    edited = next(t for t in ai if t is not corrected)
    edited_text = "BETA rewritten in Label Studio after routing."
    ls_client.tasks.update(id=str(edited.id), data={**edited.data, "response_b": edited_text})
    assert sorted(expected) == imported

    pairs_path, trl_path = tmp_path / "pairs.jsonl", tmp_path / "trl.jsonl"
    summary = run_export(backend, project_id, pairs_path, "pairs")
    assert f"{n} tasks, {n} rows (pairs)" in summary
    assert "no label yet 1" in summary

    rows = {int(r["id"]): r for r in map(json.loads, pairs_path.read_text().splitlines())}
    assert sorted(rows) == imported
    decided = dict(
        backend.query(
            "SELECT task_id, model_version FROM decisions WHERE project_id = ?", project_id
        )
    )
    by_id = {t.id: t for t in tasks}
    for task_id, (label, source, email) in expected.items():
        row = rows[task_id]
        assert (row["label"], row["source"]) == (label, source), (task_id, row)
        assert [v["annotator_email"] for v in row["votes"]] == ([email] if email else [])
        assert row["human"] == ([label] if email else [])
        assert row["route"] == by_id[task_id].data[ROUTE_FIELD]
        assert row["audit"] == (by_id[task_id] in audits)
        assert row["router_version"] == decided[task_id]
        assert row["judge"]["label"] == JUDGE_LABEL[plan_of(by_id[task_id])]
        assert row["prompt"] == by_id[task_id].data["prompt"]
    (vote,) = rows[corrected.id]["votes"]
    assert (vote["edited_prefill"], vote["annotator_id"]) == (True, annotator_id)
    assert rows[edited.id]["response_b"] == edited_text

    # The pairs file is the format fit and route read, human votes and judges included.
    comparisons = {c.id: c for c in read_comparisons(pairs_path)}
    assert len(comparisons) == n
    assert [v.value for v in comparisons[str(corrected.id)].human] == ["B"]
    fitted = subprocess.run(
        [str(HYPER_LS), "fit", str(pairs_path), "--out", str(tmp_path / "router.json")],
        env=backend.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fitted.returncode == 0, fitted.stderr

    # The same rows when Label Studio is read 7 tasks a page, and from GET /export.
    store = open_store(f"sqlite:///{backend.model_dir / 'hyper.sqlite3'}")
    try:
        paged = export_project(ls_client, store, project_id, page_size=7)
    finally:
        store.engine.dispose()
    assert paged.jsonl(ExportFormat.PAIRS) == pairs_path.read_text()

    # TRL: ties (the judge's and none else) and the unlabelled task left out, and counted.
    summary = run_export(backend, project_id, trl_path, "trl")
    sided = {t: label for t, (label, _, _) in expected.items() if label in ("A", "B")}
    ties = sum(label == "tie" for label, _, _ in expected.values())
    assert f"{n} tasks, {len(sided)} rows (trl)" in summary
    assert f"{ties} ties" in summary
    response = httpx.get(
        f"{backend.url}/export", params={"project": project_id, "format": "trl"}, timeout=120
    )
    assert response.status_code == 200
    assert response.text == trl_path.read_text()
    assert response.headers["content-disposition"] == (
        f'attachment; filename="project-{project_id}-trl.jsonl"'
    )
    counted = json.loads(response.headers["x-export-summary"])
    assert (counted["written"], counted["ties"], counted["unlabelled"]) == (len(sided), ties, 1)

    from datasets import Value, load_dataset  # a test dependency; slow to import

    dataset = load_dataset(
        "json", data_files=str(trl_path), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert dataset.column_names == ["prompt", "chosen", "rejected"]
    assert all(feature == Value("string") for feature in dataset.features.values())
    assert len(dataset) == len(sided)
    prompts = {by_id[t].data["prompt"]: t for t in sided}
    for row in dataset:
        task_id = prompts[row["prompt"]]
        a, b = rows[task_id]["response_a"], rows[task_id]["response_b"]
        assert (row["chosen"], row["rejected"]) == ((a, b) if sided[task_id] == "A" else (b, a))
