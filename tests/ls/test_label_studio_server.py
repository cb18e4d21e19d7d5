"""The shipped configs and our prediction results against a real Label Studio server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.label_studio import LabelStudioServer
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.core.policy import Route
from hyper_ls_backend.ls.client import LabelStudioClient, WriteBack
from hyper_ls_backend.ls.label_config import (
    Strength,
    parse_label_config,
    prediction_result,
)
from ls.configs import SHIPPED

pytestmark = pytest.mark.label_studio

TASK = {
    "prompt": "Why is the sky blue?",
    "response_a": "Rayleigh scattering.",
    "response_b": "Magic.",
}


@pytest.fixture(scope="module")
def client(label_studio: LabelStudioServer) -> LabelStudio:
    return LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def project_with_task(
    client: LabelStudio, request: pytest.FixtureRequest
) -> Iterator[tuple[str, int, int]]:
    """A project with a shipped config and one task: (config name, project id, task id)."""
    name = request.param
    project = client.projects.create(title=f"hyper-ls {name}", label_config=SHIPPED[name])
    assert project.id is not None
    client.projects.import_tasks(id=project.id, request=[{"data": TASK}])
    (task,) = list(client.tasks.list(project=project.id))
    yield name, project.id, task.id
    client.projects.delete(id=project.id)


def test_label_studio_stores_the_shipped_config_as_given(
    client: LabelStudio, project_with_task: tuple[str, int, int]
) -> None:
    name, project_id, _ = project_with_task

    stored = client.projects.get(id=project_id).label_config

    assert parse_label_config(stored) == parse_label_config(SHIPPED[name])


@pytest.mark.parametrize("label", list(Label))
@pytest.mark.parametrize("strength", [None, Strength.SLIGHT, Strength.CLEAR])
def test_prediction_result_is_accepted(
    client: LabelStudio,
    project_with_task: tuple[str, int, int],
    label: Label,
    strength: Strength | None,
) -> None:
    name, project_id, task_id = project_with_task
    result = prediction_result(parse_label_config(SHIPPED[name]), label, strength)

    response = client.projects.import_predictions(
        id=project_id,
        request=[{"task": task_id, "result": result, "score": 0.5, "model_version": "test"}],
    )

    assert response.created == 1


def test_a_result_off_the_scale_is_dropped(
    client: LabelStudio, project_with_task: tuple[str, int, int]
) -> None:
    """Shows the acceptance test above can fail: Label Studio validates imported predictions."""
    name, project_id, task_id = project_with_task
    result = prediction_result(parse_label_config(SHIPPED[name]), Label.A)
    result[0]["value"]["choices"] = ["A-is-a-bit-better"]

    response = client.projects.import_predictions(
        id=project_id, request=[{"task": task_id, "result": result, "model_version": "test"}]
    )

    assert response.created == 0


def test_a_broken_config_is_refused(client: LabelStudio) -> None:
    """Shows the shipped configs' acceptance means something."""
    broken = SHIPPED["3way"].replace('toName="prompt"', 'toName="nowhere"')

    with pytest.raises(ApiError):
        client.projects.create(title="broken", label_config=broken)


@pytest.mark.parametrize("route", ["ai", "human"])
def test_a_task_deleted_before_its_write_back_is_left_out_and_the_others_written(
    client: LabelStudio, route: str
) -> None:
    """Label Studio refuses a bulk prediction import naming a deleted task (400), and its
    Data Manager actions skip it: the write-back goes on for the others."""
    project = client.projects.create(title="hyper-ls deleted", label_config=SHIPPED["3way"])
    assert project.id is not None
    client.projects.import_tasks(id=project.id, request=[{"data": TASK}, {"data": TASK}])
    kept, deleted = sorted(task.id for task in client.tasks.list(project=project.id))
    client.tasks.delete(id=str(deleted))
    items = [
        WriteBack(
            task_id=task_id,
            route=Route(route),
            score=0.5,
            reason="test",
            model_version="test",
            label=Label.A,
            fresh=True,
        )
        for task_id in (kept, deleted)
    ]

    written = LabelStudioClient(client).write_many(
        project.id, parse_label_config(SHIPPED["3way"]), items
    )

    assert list(written) == [kept]
    assert client.tasks.get(id=str(kept)).data["hyper_route"] == route
    assert (written[kept].annotation_id is not None) is (route == "ai")
    client.projects.delete(id=project.id)
