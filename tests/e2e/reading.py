"""Reading what the backend did, from Label Studio and from the backend's own database."""

from __future__ import annotations

import time
from typing import Any

from label_studio_sdk import LabelStudio

from e2e.backend import BackendProcess, wait_for
from hyper_ls_backend.ls.client import REASON_FIELD, ROUTE_FIELD


def ls_tasks(client: LabelStudio, project_id: int) -> list[Any]:
    return list(client.tasks.list(project=project_id, fields="all"))


def as_dict(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else item.model_dump(mode="json")


def predictions(task: Any) -> list[dict[str, Any]]:
    return [as_dict(p) for p in task.predictions or []]


def annotations(task: Any) -> list[dict[str, Any]]:
    return [as_dict(a) for a in task.annotations or []]


def choice_of(result: list[dict[str, Any]]) -> str:
    (region,) = [r for r in result if r["from_name"] == "preference"]
    (choice,) = region["value"]["choices"]
    return choice


def plan_of(task: Any) -> str:
    return task.data["prompt"].split("[judge:", 1)[1].split("]", 1)[0]


def key_of(task: Any) -> str:
    return task.data["prompt"].split("<<", 1)[1].split(">>", 1)[0]


def wait_until_routed(
    client: LabelStudio, project_id: int, n: int, timeout: float
) -> tuple[list[Any], float]:
    """Poll Label Studio until ``n`` tasks show a route; (tasks, seconds waited)."""
    start = time.monotonic()

    def routed() -> list[Any] | None:
        tasks = ls_tasks(client, project_id)
        done = [t for t in tasks if ROUTE_FIELD in t.data]
        return tasks if len(done) >= n else None

    tasks = wait_for(routed, timeout, interval=1.0, what=f"{n} routed tasks")
    return tasks, time.monotonic() - start


def import_tasks(client: LabelStudio, project_id: int, data: list[dict[str, Any]]) -> list[int]:
    """Import through the SDK (Label Studio sends TASKS_CREATED); the new task ids in order."""
    before = {t.id for t in client.tasks.list(project=project_id)}
    response = client.projects.import_tasks(id=project_id, request=[{"data": d} for d in data])
    assert response.task_count == len(data)
    ids = sorted(t.id for t in client.tasks.list(project=project_id) if t.id not in before)
    assert len(ids) == len(data)
    return ids


def decisions_in_store(
    backend: BackendProcess, project_id: int, unwritten: bool = False
) -> list[tuple[int, str]]:
    """(task, route) rows of the backend's own database (read-only); ``unwritten``: only
    decisions not yet written back to Label Studio."""
    where = " AND written_at IS NULL" if unwritten else ""
    return backend.query(
        f"SELECT task_id, route FROM decisions WHERE project_id = ?{where} ORDER BY task_id",
        project_id,
    )


def judged_in_store(backend: BackendProcess, project_id: int) -> int:
    """Tasks of the project with a judge output in the backend's database."""
    ((count,),) = backend.query(
        "SELECT count(*) FROM judge_outputs WHERE project_id = ?", project_id
    )
    return count


def finished_jobs(backend: BackendProcess) -> int:
    """Routing jobs the backend has run (from its log: huey logs each one it finishes)."""
    log = backend.log.read_text(errors="replace")
    return sum(1 for line in log.splitlines() if "route_tasks" in line and "executed in" in line)


def wait_idle(backend: BackendProcess, timeout: float = 30.0) -> None:
    def idle() -> bool:
        status, body = backend.request("GET", "/health", auth=backend.auth)
        return status == 200 and body["pending_jobs"] == body["received_imports"] == 0

    wait_for(idle, timeout, interval=0.2, what="the backend's queue to drain")


def check_ai_task(task: Any) -> str:
    """An AI-routed task: one backend prediction, one annotation from it, labelled; returns
    the choice."""
    (prediction,) = predictions(task)
    (annotation,) = annotations(task)
    choice = choice_of(prediction["result"])
    assert choice_of(annotation["result"]) == choice
    assert annotation["parent_prediction"] == prediction["id"]
    assert task.is_labeled is True
    assert task.total_annotations == 1
    return choice


def check_human_task(task: Any) -> None:
    assert predictions(task) == []
    assert annotations(task) == []
    assert task.is_labeled is False
    assert task.data[REASON_FIELD].startswith("human: ")
