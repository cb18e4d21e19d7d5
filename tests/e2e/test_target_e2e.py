"""A quality target end to end (issue 8), with a real Label Studio: a project with
``HYPER_TARGET_AGREEMENT`` audits at the warm-up share, an annotator labels the audits,
"Start training" certifies a threshold, the next import's AI-routed tasks all pass it,
``/status`` and the dashboard show the certified level, and a restarted backend keeps it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from label_studio_sdk import LabelStudio

from e2e.backend import BackendProcess, comparison_data, wait_for
from e2e.conftest import Connect, StartBackend
from e2e.label_studio import LabelStudioServer
from e2e.reading import import_tasks, plan_of, wait_idle, wait_until_routed
from hyper_ls_backend.core.policy import AUDIT_REASON
from hyper_ls_backend.ls.client import REASON_FIELD, ROUTE_FIELD, SCORE_FIELD

pytestmark = pytest.mark.label_studio

PLANS = ["a-clear", "b-clear", "a-clear", "tie"]
HUMAN = {
    "a-clear": "A-is-clearly-better",
    "b-clear": "B-is-clearly-better",
    "tie": "B-is-clearly-better",
}
"""The annotator agrees with the judge except on its ties (75% overall): a target of 0.9
can only be certified below the ties' scores."""


def quality_target(backend: BackendProcess, project_id: int) -> dict[str, Any]:
    response = httpx.get(f"{backend.url}/status", params={"project": project_id}, timeout=30)
    response.raise_for_status()
    return response.json()["quality_target"]


def test_audits_certify_a_target_and_later_ai_labels_pass_its_threshold(
    label_studio: LabelStudioServer,
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
) -> None:
    backend = start_backend(
        HYPER_TARGET_AGREEMENT="0.9",
        HYPER_BUDGET="0.6",
        HYPER_WARMUP_AUDIT_SHARE="0.4",
        HYPER_REFIT_EVERY="10000",
    )
    project_id = connect(backend, "e2e: quality target")
    annotator = LabelStudio(
        base_url=label_studio.url, api_key=label_studio.create_user("auditor@example.com")
    )
    first = [comparison_data(f"w{i}", PLANS[i % len(PLANS)]) for i in range(160)]
    import_tasks(ls_client, project_id, first)
    tasks, _ = wait_until_routed(ls_client, project_id, 160, timeout=240)
    wait_idle(backend)

    waiting = quality_target(backend, project_id)
    assert not waiting["certified"] and waiting["audit_share"] == 0.4
    audits = [t for t in tasks if AUDIT_REASON in t.data[REASON_FIELD]]
    assert len(audits) >= 30
    for task in audits:
        choice = HUMAN[plan_of(task)]
        result = [
            {
                "from_name": "preference",
                "to_name": "prompt",
                "type": "choices",
                "value": {"choices": [choice]},
            }
        ]
        annotator.annotations.create(id=task.id, result=result, ground_truth=False)
    wait_for(
        lambda: backend.query("SELECT count(*) FROM human_labels")[0][0] == len(audits),
        timeout=60,
        what="the audits' labels in the backend's store",
    )

    (ml_backend,) = ls_client.ml.list(project=project_id)
    ls_client.ml.train(id=ml_backend.id)  # "Start training": refit, then a certification look
    certified = wait_for(
        lambda: (target := quality_target(backend, project_id))["certified"] and target,
        timeout=120,
        what="a certified threshold",
    )
    assert certified["calibration"] == len(audits)
    assert certified["certified_agreement"] >= 0.9
    threshold = certified["threshold"]
    page = httpx.get(f"{backend.url}/dashboard", params={"project": project_id}, timeout=30)
    assert "Certified: the judge labels only tasks scoring at most" in page.text

    before = {t.id for t in tasks}
    second = [comparison_data(f"s{i}", PLANS[i % len(PLANS)]) for i in range(40)]
    import_tasks(ls_client, project_id, second)
    tasks, _ = wait_until_routed(ls_client, project_id, 200, timeout=240)
    new = [t for t in tasks if t.id not in before]
    ai = [t for t in new if t.data[ROUTE_FIELD] == "ai"]
    assert ai, "the certified threshold let the judge label nothing"
    for task in ai:
        assert task.data[SCORE_FIELD] <= threshold + 0.005  # hyper_score has 2 decimals
        assert "certified: scores " in task.data[REASON_FIELD]
    assert all(plan_of(t) != "tie" for t in ai)  # the judge's ties score above it

    backend.kill()
    backend.start()
    kept = quality_target(backend, project_id)
    assert kept["certified"] and kept["threshold"] == threshold
