"""The bulk write-back against a real Label Studio: predictions in one
``import_predictions``, annotations made from them, the route fields by the Data Manager
action, ids read back, and a replay of the same write-back (a restart) that adds nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from label_studio_sdk import LabelStudio

from e2e.backend import comparison_data
from e2e.conftest import CONFIG_5POINT
from e2e.reading import annotations, check_ai_task, import_tasks, ls_tasks, predictions
from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.core.policy import Route
from hyper_ls_backend.ls.client import ROUTE_FIELD, LabelStudioClient, WriteBack
from hyper_ls_backend.ls.label_config import parse_label_config, prediction_result

pytestmark = pytest.mark.label_studio

CONFIG = CONFIG_5POINT.read_text(encoding="utf-8")


@pytest.fixture
def project(ls_client: LabelStudio) -> Iterator[int]:
    """A project with the shipped 5-point config and no backend connected (no webhook)."""
    created = ls_client.projects.create(title="e2e: bulk write-back", label_config=CONFIG)
    yield created.id
    ls_client.projects.delete(id=created.id)


def item(task_id: int, route: Route, fresh: bool = True) -> WriteBack:
    return WriteBack(
        task_id=task_id,
        route=route,
        score=0.5,
        reason=f"{route.value}: e2e",
        model_version="e2e-v1",
        label=Label.A if route is Route.AI else None,
        confidence=0.9 if route is Route.AI else None,
        fresh=fresh,
    )


def write_all(
    client: LabelStudioClient, project: int, items: list[WriteBack]
) -> dict[int, tuple[int | None, int | None]]:
    """The pipeline's write-back of a decided import: each task's prediction and annotation
    ids, for the tasks still in Label Studio."""
    written = client.write_many(project, parse_label_config(CONFIG), items)
    return {task_id: (w.prediction_id, w.annotation_id) for task_id, w in written.items()}


def test_a_chunk_gets_its_predictions_in_bulk_and_a_replay_adds_nothing(
    ls_client: LabelStudio, project: int
) -> None:
    ids = import_tasks(ls_client, project, [comparison_data(f"bulk{i}") for i in range(8)])
    routes = [Route.AI] * 6 + [Route.HUMAN] * 2
    client = LabelStudioClient(ls_client)

    first = write_all(client, project, [item(t, r) for t, r in zip(ids, routes, strict=True)])
    # a restart replays the same write-back, no longer fresh: it finds everything
    again = write_all(
        client, project, [item(t, r, fresh=False) for t, r in zip(ids, routes, strict=True)]
    )

    assert sorted(first) == ids and first == again
    assert all(first[t] == (None, None) for t in ids[6:])
    tasks = {t.id: t for t in ls_tasks(ls_client, project)}
    for task_id in ids[:6]:
        assert first[task_id] == ours(tasks[task_id])
        assert check_ai_task(tasks[task_id]) == "A-is-clearly-better"
        assert tasks[task_id].data[ROUTE_FIELD] == "ai"
    for task_id in ids[6:]:
        task = tasks[task_id]
        assert predictions(task) == [] and annotations(task) == []
        assert task.data[ROUTE_FIELD] == "human"


def ours(task: object) -> tuple[int, int]:
    """The ids of the task's prediction of the write-back's model version, and of the
    annotation made from it, as Label Studio shows them."""
    (prediction,) = [p for p in predictions(task) if p["model_version"] == "e2e-v1"]
    (annotation,) = [a for a in annotations(task) if a["parent_prediction"] == prediction["id"]]
    return prediction["id"], annotation["id"]


def test_the_ids_read_back_are_the_write_backs_own_beside_another_models_prediction(
    ls_client: LabelStudio, project: int
) -> None:
    """The export the ids are read from names predictions by id only: a task that also
    carries another model's prediction (made before ours, and after) gets the ids of ours."""
    ids = import_tasks(ls_client, project, [comparison_data(f"other{i}") for i in range(3)])
    result = prediction_result(parse_label_config(CONFIG), Label.B)
    ls_client.predictions.create(task=ids[0], result=result, score=0.4, model_version="other")
    client = LabelStudioClient(ls_client)

    written = write_all(client, project, [item(task_id, Route.AI) for task_id in ids])
    ls_client.predictions.create(task=ids[1], result=result, score=0.4, model_version="other")
    again = write_all(client, project, [item(task_id, Route.AI, fresh=False) for task_id in ids])

    tasks = {t.id: t for t in ls_tasks(ls_client, project)}
    assert written == again == {task_id: ours(tasks[task_id]) for task_id in ids}
    assert len(predictions(tasks[ids[0]])) == len(predictions(tasks[ids[1]])) == 2


def test_a_task_deleted_before_its_bulk_write_leaves_the_rest_of_the_chunk_written(
    ls_client: LabelStudio, project: int
) -> None:
    ids = import_tasks(ls_client, project, [comparison_data(f"gone{i}") for i in range(4)])
    ls_client.tasks.delete(id=str(ids[1]))
    client = LabelStudioClient(ls_client)
    config = parse_label_config(CONFIG)
    items = [item(task_id, Route.AI) for task_id in ids]

    written = client.write_many(project, config, items)  # the bulk import is refused

    assert sorted(written) == [ids[0], *ids[2:]]  # so they were made one by one
    tasks = {t.id: t for t in ls_tasks(ls_client, project)}
    assert sorted(tasks) == [ids[0], *ids[2:]]
    for task in tasks.values():
        assert check_ai_task(task) == "A-is-clearly-better"
        assert task.data[ROUTE_FIELD] == "ai"
