"""Label Studio's own comparison templates, as a user starts from them: a project made from
the template (read from the installed Label Studio), the backend added in its Model settings.
The two pairwise templates route an import of 100 tasks within the budget, pre-filled in the
template's own ``<Pairwise>``; the templates of three or more responses are refused at
connect, with the reason in the error Label Studio shows."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from ls.test_templates import PAIRWISE, RANKER, RESPONSE_SELECTION, RLHF, installed_templates

from e2e.backend import ALPHA, BETA
from e2e.conftest import StartBackend
from e2e.reading import annotations, import_tasks, predictions, wait_until_routed
from hyper_ls_backend.core.policy import NO_TIE_REASON
from hyper_ls_backend.ls.client import REASON_FIELD, ROUTE_FIELD

pytestmark = pytest.mark.label_studio

BUDGET, N = 0.2, 100
PLANS = ["a-clear", "b-clear", "a-slight", "tie", "b-slight", "tie", "a-clear", "biased"]
"""3 of every 8 tasks are a judge tie (two ``tie``, one ``biased``: its orders disagree),
which a ``<Pairwise>`` cannot hold: 37 ties for 20 human places."""
SIDE = {"a-clear": "left", "a-slight": "left", "b-clear": "right", "b-slight": "right"}


@pytest.fixture
def template_project(ls_client: LabelStudio) -> Iterator[Any]:
    """``make(template, title)``: a project with the template's config; deleted at teardown."""
    made: list[int] = []

    def make(template: str, title: str) -> int:
        project = ls_client.projects.create(
            title=title, label_config=installed_templates()[template]
        )
        made.append(project.id)
        return project.id

    yield make
    for project_id in made:
        ls_client.projects.delete(id=project_id)


def texts(key: str, plan: str) -> tuple[str, str]:
    """Response A (ALPHA, carrying the task's key and judge plan) and response B (BETA)."""
    return (
        f"{ALPHA} <<{key}>> [judge:{plan}] practise a little every day and review mistakes.",
        f"{BETA} read about it once.",
    )


def rlhf_task(key: str, plan: str) -> dict[str, Any]:
    first, second = texts(key, plan)
    return {"prompt": f"What is a good way to learn {key}?", "answer1": first, "answer2": second}


def pairwise_task(key: str, plan: str) -> dict[str, Any]:
    first, second = texts(key, plan)
    return {"pairText1": first, "pairText2": second}


def plan_in(task: Any) -> str:
    text = " ".join(str(value) for value in task.data.values())
    return text.split("[judge:", 1)[1].split("]", 1)[0]


@pytest.mark.parametrize(
    ("template", "control", "make_task"),
    [(RLHF, "comparison", rlhf_task), (PAIRWISE, "pw", pairwise_task)],
    ids=["rlhf", "pairwise-classification"],
)
def test_a_pairwise_template_routes_100_tasks_within_the_budget_prefilled_in_its_control(
    ls_client: LabelStudio,
    start_backend: StartBackend,
    template_project: Any,
    template: str,
    control: str,
    make_task: Any,
) -> None:
    backend = start_backend(HYPER_BUDGET=str(BUDGET), HYPER_AUDIT_SHARE="0")
    project_id = template_project(template, f"e2e: {template.split('/')[-1]}")
    ls_client.ml.create(project=project_id, url=backend.url, title="HyPER", is_interactive=False)
    data = [make_task(f"k{i}", PLANS[i % len(PLANS)]) for i in range(N)]

    import_tasks(ls_client, project_id, data)
    tasks, _ = wait_until_routed(ls_client, project_id, N, timeout=240)

    routes = Counter(t.data[ROUTE_FIELD] for t in tasks)
    assert routes["human"] == math.floor(BUDGET * N)
    unlabelled = 0
    for task in tasks:
        plan = plan_in(task)
        if task.data[ROUTE_FIELD] == "human":
            assert annotations(task) == [] and not task.is_labeled
            continue
        if plan not in SIDE:  # a tie once the budget is spent: left unlabelled, and why
            assert NO_TIE_REASON in task.data[REASON_FIELD], task.data
            assert annotations(task) == [] and predictions(task) == []
            unlabelled += 1
            continue
        (prediction,) = predictions(task)
        (annotation,) = annotations(task)
        for (region,) in (prediction["result"], annotation["result"]):
            assert (region["from_name"], region["to_name"], region["type"]) == (
                control,
                control,
                "pairwise",
            )
            assert region["value"] == {"selected": SIDE[plan]}
        assert task.is_labeled
    ties = sum(1 for t in tasks if plan_in(t) not in SIDE)
    assert unlabelled == ties - math.floor(BUDGET * N)  # every human place went to a tie


@pytest.mark.parametrize(
    ("template", "says"),
    [
        (RESPONSE_SELECTION, "three or more responses"),
        (RANKER, "Ranker name='rank' ranks a list of responses"),
    ],
    ids=["response-selection", "llm-ranker"],
)
def test_a_template_of_three_or_more_responses_is_refused_at_connect_with_the_reason(
    ls_client: LabelStudio,
    start_backend: StartBackend,
    template_project: Any,
    template: str,
    says: str,
) -> None:
    """What Label Studio answers the Model settings dialog is what its UI shows."""
    backend = start_backend()
    project_id = template_project(template, f"e2e: {template.split('/')[-1]}")
    with pytest.raises(ApiError) as refused:
        ls_client.ml.create(project=project_id, url=backend.url, title="HyPER")
    shown = unquote_plus(str(refused.value.body))
    assert refused.value.status_code == 400
    assert says in shown and "Human Preference collection for RLHF" in shown, shown
    assert list(ls_client.ml.list(project=project_id)) == []
    assert f"/setup of project {project_id} refused: " in backend.log.read_text()
