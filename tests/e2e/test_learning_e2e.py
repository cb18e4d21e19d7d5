"""Acceptance test of the learning loop, end to end (issue 4).

A real Label Studio with two users: the admin, whose token the backend uses, and an
annotator. The campaign's judge behaves unlike MT-Bench's: it is wrong exactly where it is
consistent, and right where it contradicts itself. The annotator labels the human queue;
the backend must refit on those labels (and only those), adopt the new version, report it
to Label Studio, and route the next import with it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from label_studio_sdk import LabelStudio

from e2e.backend import BackendProcess, comparison_data, wait_for
from e2e.conftest import Connect, StartBackend
from e2e.label_studio import LabelStudioServer
from e2e.reading import (
    annotations,
    check_ai_task,
    check_human_task,
    import_tasks,
    ls_tasks,
    plan_of,
    predictions,
    wait_idle,
    wait_until_routed,
)
from hyper_ls_backend.core.policy import AUDIT_REASON
from hyper_ls_backend.ls.client import REASON_FIELD, ROUTE_FIELD, TABS

pytestmark = pytest.mark.label_studio

HUMAN_ANSWER = {"a-clear": "B-is-clearly-better", "tie": "Tie", "biased": "Tie"}
"""The annotator's answer by judge plan: the judge that says A is wrong, the one that says
tie in both orders is right, and so is the position-biased one (whose contradicting answers
make a tie)."""


def labels_in_store(backend: BackendProcess, project_id: int) -> dict[int, bool]:
    """annotation id -> deleted, from the backend's database (read-only)."""
    rows = backend.query(
        "SELECT annotation_id, deleted FROM human_labels WHERE project_id = ?", project_id
    )
    return {annotation: bool(deleted) for annotation, deleted in rows}


def versions_in_store(backend: BackendProcess, project_id: int) -> list[tuple[str, bool]]:
    return backend.query(
        "SELECT version, active FROM router_versions WHERE project_id = ? ORDER BY created_at",
        project_id,
    )


def model_version_in_label_studio(client: LabelStudio, project_id: int) -> str:
    """What Label Studio shows as the backend's version (it asks ``/setup`` on a read)."""
    (backend,) = client.ml.list(project=project_id)
    return str(client.ml.get(id=backend.id).model_version)


def is_audit(task: Any) -> bool:
    return AUDIT_REASON in task.data[REASON_FIELD]


def answer(task: Any) -> list[dict[str, Any]]:
    choice = HUMAN_ANSWER[plan_of(task)]
    return [
        {
            "from_name": "preference",
            "to_name": "prompt",
            "type": "choices",
            "value": {"choices": [choice]},
        }
    ]


def test_human_labels_refit_the_router_and_the_next_import_is_routed_by_the_new_version(
    label_studio: LabelStudioServer,
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
) -> None:
    n_first, n_second = 210, 40
    backend = start_backend(
        HYPER_BUDGET="0.5",
        HYPER_AUDIT_SHARE="0.3",
        HYPER_REFIT_EVERY="10000",
        HYPER_PRIOR_STRENGTH="10",
    )
    project_id = connect(backend, "e2e: learning")
    annotator = LabelStudio(
        base_url=label_studio.url, api_key=label_studio.create_user("annotator@example.com")
    )
    plans = ["a-clear", "tie", "biased"]
    first = [comparison_data(f"first{i}", plans[i % 3]) for i in range(n_first)]
    prior_version = model_version_in_label_studio(ls_client, project_id)

    import_tasks(ls_client, project_id, first)
    tasks, _ = wait_until_routed(ls_client, project_id, n_first, timeout=240)
    wait_idle(backend)

    # A self-contradicting judge's verdict is doubtful: every biased task goes to humans
    # first (70 of the 105 the budget allows). Audits are judge-bound tasks sent to humans
    # unfilled, from the rest of the allowance.
    human = [t for t in tasks if t.data[ROUTE_FIELD] == "human"]
    audits = [t for t in human if is_audit(t)]
    assert len(human) == n_first // 2
    assert Counter(plan_of(t) for t in human)["biased"] == n_first // 3
    assert audits and {plan_of(t) for t in audits} == {"a-clear", "tie"}
    for task in human:
        check_human_task(task)
    views = {v.data["title"]: v.id for v in ls_client.views.list(project=project_id)}
    queue = {t.id for t in ls_client.tasks.list(project=project_id, view=views[next(iter(TABS))])}
    assert {t.id for t in audits} <= queue
    ai_annotations = [check_ai_task(t) for t in tasks if t.data[ROUTE_FIELD] == "ai"]
    assert ai_annotations, "no AI-routed task"

    # The annotator labels the human queue; the backend's own annotations are not labels.
    made = [
        annotator.annotations.create(id=t.id, result=answer(t), ground_truth=False).id
        for t in human
    ]
    wait_for(
        lambda: len(labels_in_store(backend, project_id)) == len(made),
        timeout=60,
        what="the annotator's labels in the backend's store",
    )
    assert set(labels_in_store(backend, project_id)) == set(made)

    # Deleting an annotation in Label Studio takes its label out of training.
    ls_client.annotations.delete(id=made[0])
    wait_for(
        lambda: labels_in_store(backend, project_id)[made[0]],
        timeout=60,
        what="the deleted annotation's label to be forgotten",
    )

    # "Start training" in Label Studio: a refit, adopted, and Label Studio sees the version.
    assert model_version_in_label_studio(ls_client, project_id) == prior_version
    (ml_backend,) = ls_client.ml.list(project=project_id)
    ls_client.ml.train(id=ml_backend.id)
    wait_for(
        lambda: any(active for _, active in versions_in_store(backend, project_id)),
        timeout=120,
        what="an adopted refit",
    )
    ((new_version, _),) = [v for v in versions_in_store(backend, project_id) if v[1]]
    assert new_version != prior_version
    assert model_version_in_label_studio(ls_client, project_id) == new_version

    # The next import is routed by the new version, which has learnt where this judge errs.
    before = {t.id for t in tasks}
    # (no biased task this time: the router's own picks are what the refit changed)
    second = [comparison_data(f"second{i}", plans[i % 2]) for i in range(n_second)]
    import_tasks(ls_client, project_id, second)
    tasks, _ = wait_until_routed(ls_client, project_id, n_first + n_second, timeout=120)
    wait_idle(backend)
    new = [t for t in tasks if t.id not in before]
    for task in new:
        if task.data[ROUTE_FIELD] == "ai":
            (prediction,) = predictions(task)
            assert prediction["model_version"] == new_version
        else:
            assert predictions(task) == [] and annotations(task) == []
    picked = [t for t in new if t.data[ROUTE_FIELD] == "human" and not is_audit(t)]
    assert picked and Counter(plan_of(t) for t in picked)["a-clear"] >= 0.9 * len(picked)
    assert len(ls_tasks(ls_client, project_id)) == n_first + n_second
