"""Turning Label Studio tasks into comparisons (no server needed), and writing decisions
back to them (``label_studio`` tests: a real Label Studio server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from e2e.label_studio import LabelStudioServer
from label_studio_sdk import LabelStudio
from server.harness import FakeLabelStudio

from hyper_ls_backend.core.comparison import Label, Turn
from hyper_ls_backend.core.policy import Route
from hyper_ls_backend.ls.client import (
    JUDGE_EMAIL,
    REASON_FIELD,
    ROUTE_FIELD,
    SCORE_FIELD,
    LabelStudioClient,
    WriteBack,
    Written,
)
from hyper_ls_backend.ls.label_config import (
    PreferenceConfig,
    parse_label_config,
    task_to_comparison,
)
from ls.configs import SHIPPED, config

STANDARD = parse_label_config(SHIPPED["5point"])
RENAMED = parse_label_config(
    config(
        '<Text name="q" value="$question"/><Text name="ctx" value="$context"/>'
        '<Text name="a1" value="$answer1"/><Text name="a2" value="$answer2"/>',
        "A",
        "B",
        "Tie",
    )
)


def _task(**data: Any) -> dict[str, Any]:
    base = {"prompt": "Why is the sky blue?", "response_a": "Rayleigh.", "response_b": "Magic."}
    return {"id": 7, "data": {**base, **data}, "meta": {}, "annotations": []}


def test_task_becomes_a_comparison() -> None:
    task = _task(tags={"Subject": "Physics"}, meta={"group": "q1"})

    comparison = task_to_comparison(task, STANDARD)

    assert comparison.id == "7"
    assert comparison.prompt == "Why is the sky blue?"
    assert (comparison.response_a, comparison.response_b) == ("Rayleigh.", "Magic.")
    assert comparison.tags == {"Subject": "physics"}
    assert comparison.group == "q1"
    assert comparison.context_a == comparison.context_b == []


def test_renamed_fields_and_context_text_are_read() -> None:
    task = {
        "id": 3,
        "data": {
            "question": "And in French?",
            "context": "user: Hi",
            "answer1": "x",
            "answer2": "",
        },
    }

    comparison = task_to_comparison(task, RENAMED)

    assert (comparison.prompt, comparison.response_a, comparison.response_b) == (
        "And in French?",
        "x",
        "",
    )
    assert (
        comparison.context_a == comparison.context_b == [Turn(role="context", content="user: Hi")]
    )


def test_context_turns_are_shared_unless_a_side_has_its_own() -> None:
    shared = [{"role": "user", "content": "Hi"}]
    own_b = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]

    comparison = task_to_comparison(_task(context=shared, context_b=own_b), STANDARD)

    assert comparison.context_a == [Turn(role="user", content="Hi")]
    assert comparison.context_b == [Turn(**turn) for turn in own_b]


@pytest.mark.parametrize(
    ("task", "config", "message"),
    [
        ({"data": {}}, STANDARD, "the task has no id"),
        ({"id": 1}, STANDARD, "task 1: 'data' is missing"),
        (
            {"id": 1, "data": {"response_a": "a", "response_b": "b"}},
            STANDARD,
            r"task 1: data.prompt \(the prompt\) is missing",
        ),
        (_task(response_b=["not", "text"]), STANDARD, r"data.response_b \(response B\) is list"),
        (_task(prompt="  "), STANDARD, r"data.prompt \(the prompt\) is empty"),
        (_task(response_a="", response_b=" "), STANDARD, "are both empty"),
        (_task(), RENAMED, r"data.question \(the prompt\) is missing"),
        (_task(context=[{"speaker": "x"}]), STANDARD, "data.context must be text or a list"),
        (_task(context_a=42), STANDARD, "data.context_a must be text or a list"),
        (_task(tags=["a"]), STANDARD, "data.tags must be an object"),
        (
            _task(response_a="x" * 1_000_001),
            STANDARD,
            r"task 7: data.response_a: .*1,000,001 characters",
        ),
    ],
)
def test_bad_tasks_name_the_field_at_fault(
    task: dict[str, Any], config: PreferenceConfig, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        task_to_comparison(task, config)


# -- writing back (a real Label Studio) -------------------------------------------------------


@pytest.fixture(scope="module")
def sdk(label_studio: LabelStudioServer) -> LabelStudio:
    return LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)


@pytest.fixture
def project(sdk: LabelStudio) -> Iterator[int]:
    created = sdk.projects.create(title="hyper-ls write-back", label_config=SHIPPED["5point"])
    assert created.id is not None
    yield created.id
    sdk.projects.delete(id=created.id)


def _item(task_id: int, route: Route = Route.AI, **overrides: Any) -> WriteBack:
    fields: dict[str, Any] = {
        "task_id": task_id,
        "route": route,
        "score": 0.61234,
        "reason": "test",
        "model_version": "test",
        "label": Label.A,
        "confidence": 0.9,
        "fresh": True,
    }
    return WriteBack(**(fields | overrides))


@pytest.mark.label_studio
@pytest.mark.parametrize("route", list(Route))
def test_write_back_keeps_what_was_edited_in_label_studio_after_import(
    sdk: LabelStudio, project: int, route: Route
) -> None:
    """The route fields are set by Label Studio itself in each task's data (the Data
    Manager action), so a field edited, added or removed after the import stays so."""
    imported = {**_task()["data"], "source": "batch-1"}
    sdk.projects.import_tasks(id=project, request=[{"data": imported}])
    (task,) = list(sdk.tasks.list(project=project))
    edited = {**imported, "prompt": "Why is the sky blue at noon?", "reviewed_by": "ana"}
    del edited["source"]
    sdk.tasks.update(id=str(task.id), data=edited)

    LabelStudioClient(sdk).write_many(project, STANDARD, [_item(task.id, route)])

    data = sdk.tasks.get(id=str(task.id)).data
    assert data == {**edited, ROUTE_FIELD: route.value, SCORE_FIELD: 0.61, REASON_FIELD: "test"}


@pytest.mark.label_studio
def test_the_judge_annotates_as_its_own_user_created_once(sdk: LabelStudio, project: int) -> None:
    sdk.projects.import_tasks(id=project, request=[{"data": _task()["data"]}])
    (task,) = list(sdk.tasks.list(project=project))
    first, second = LabelStudioClient(sdk), LabelStudioClient(sdk)

    written = first.write_many(project, STANDARD, [_item(task.id, label=Label.B)])[task.id]

    judge = second.judge_user_id()  # another client (a restarted backend) finds the same user
    assert [u.id for u in sdk.users.list() if u.email == JUDGE_EMAIL] == [judge]
    annotation = sdk.annotations.get(id=written.annotation_id)
    assert annotation.completed_by == judge != second.user_id
    assert second.is_backend_user(judge) and second.is_backend_user(second.user_id)
    human = sdk.users.create(username="ann", email="annotator-write-back@example.com")
    assert not second.is_backend_user(human.id)


@pytest.mark.label_studio
def test_with_a_token_of_its_own_the_judge_annotates_in_bulk_under_its_name(
    label_studio: LabelStudioServer, sdk: LabelStudio, project: int
) -> None:
    """With ``LABEL_STUDIO_JUDGE_API_KEY`` the annotations are made by one Data Manager
    action, credited to that token's owner; written again, nothing is added."""
    token = label_studio.create_user("judge-bulk@example.com")
    sdk.projects.import_tasks(id=project, request=[{"data": _task()["data"]}] * 3)
    ids = sorted(task.id for task in sdk.tasks.list(project=project))
    client = LabelStudioClient.connect(label_studio.url, label_studio.api_key, token)
    items = [_item(task_id) for task_id in ids]
    users = len(sdk.users.list())

    first = client.write_many(project, STANDARD, items)
    again = client.write_many(project, STANDARD, [_item(t, fresh=False) for t in ids])

    judge = client.judge_user_id()
    assert judge != client.user_id and client.is_backend_user(judge)
    assert first == again and sorted(first) == ids
    for task_id in ids:
        annotations = sdk.annotations.list(id=task_id)
        assert [(a.id, a.completed_by) for a in annotations] == [
            (first[task_id].annotation_id, judge)
        ]
    assert len(sdk.users.list()) == users  # no judge user of the backend's own made


def test_a_token_that_may_not_create_users_annotates_as_its_owner(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Enterprise lets only admins list or create users: the write-back goes on, credited
    to the token's owner, and says so once."""
    fake = FakeLabelStudio().start()
    fake.users_refused = True
    try:
        client = LabelStudioClient.connect(fake.url, "token")
        written = client.write_many(7, STANDARD, [_item(1), _item(2)])
        assert all(w.annotation_id is not None for w in written.values()) and len(written) == 2
        assert client.is_backend_user(fake.user_id) and not client.is_backend_user(5)
    finally:
        fake.stop()
    posted = [body for m, path, _, body in fake.requests if m == "POST" and "annotations" in path]
    assert len(posted) == 2 and not any("completed_by" in body for body in posted)
    refused = [r for r in caplog.records if "refused to list or create users" in r.getMessage()]
    assert len(refused) == 1


def test_fields_are_set_once_per_field_and_value_and_a_deleted_task_left_out() -> None:
    fake = FakeLabelStudio().start()
    fake.tasks = {t: {"prompt": f"edited {t}"} for t in (1, 2, 3)}
    fake.deleted_tasks = {3}
    items = [
        _item(1, Route.HUMAN, score=0.801, reason="doubtful"),
        _item(2, Route.HUMAN, score=0.7991, reason="doubtful"),
        _item(3, Route.HUMAN, score=0.1, reason="other"),
    ]
    try:
        written = LabelStudioClient.connect(fake.url, "token").write_many(7, STANDARD, items)
    finally:
        fake.stop()
    assert sorted(written) == [1, 2]
    assert fake.tasks[1] == {
        "prompt": "edited 1",
        ROUTE_FIELD: "human",
        SCORE_FIELD: 0.8,
        REASON_FIELD: "doubtful",
    }
    actions = [(p, b) for m, p, _, b in fake.requests if "/api/dm/actions" in p]
    set_fields = [(b["value_name"], b["value"], b["selectedItems"]["included"]) for _, b in actions]
    assert set_fields == [
        (SCORE_FIELD, 0.8, [1, 2]),
        (REASON_FIELD, "doubtful", [1, 2]),
        (SCORE_FIELD, 0.1, [3]),
        (REASON_FIELD, "other", [3]),
        (ROUTE_FIELD, "human", [1, 2, 3]),
    ]
    assert not [m for m, *_ in fake.requests if m == "PATCH"]


def test_a_label_studio_without_the_action_gets_the_fields_task_by_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each task's data is then read (from the project's list, which does not make Label
    Studio call the backend's /predict as reading one task does) just before its PATCH."""
    fake = FakeLabelStudio().start()
    fake.actions_refused = True
    fake.tasks = {1: {"prompt": "edited in Label Studio"}}
    fake.deleted_tasks = {2}
    try:
        client = LabelStudioClient.connect(fake.url, "token")
        written = client.write_many(7, STANDARD, [_item(1, Route.HUMAN), _item(2, Route.HUMAN)])
        client.write_many(7, STANDARD, [_item(1, Route.HUMAN)])
    finally:
        fake.stop()
    assert list(written) == [1]
    patches = [body for method, _, _, body in fake.requests if method == "PATCH"]
    assert len(patches) == 2 and patches[0]["data"]["prompt"] == "edited in Label Studio"
    assert patches[0]["data"][ROUTE_FIELD] == "human"
    reads = [path for method, path, _, _ in fake.requests if method == "GET"]
    read_back = [r for r in reads if r.startswith("/api/projects/7/export?")]
    assert read_back and all(
        r.startswith("/api/tasks/?") and "project=7" in r for r in reads if r not in read_back
    )
    refused = [r for r in caplog.records if "refused the Data Manager action" in r.getMessage()]
    assert len(refused) == 1


@pytest.mark.parametrize("check_human", [True, False])
def test_human_routed_tasks_are_read_back_only_when_asked(check_human: bool) -> None:
    """They carry nothing to read, only whether they still exist (which assigning them
    needs): unchecked, they are assumed there, and only the AI-routed task is exported."""
    fake = FakeLabelStudio().start()
    fake.deleted_tasks = {2}
    try:
        client = LabelStudioClient.connect(fake.url, "token")
        items = [_item(1, Route.HUMAN), _item(2, Route.HUMAN), _item(3)]
        written = client.write_many(7, STANDARD, items, check_human=check_human)
    finally:
        fake.stop()
    assert sorted(written) == ([1, 3] if check_human else [1, 2, 3])
    assert written[1] == Written() and written[3].prediction_id is not None
    exported = [
        [int(t) for t in parse_qs(urlsplit(path).query)["ids[]"]]
        for method, path, _, _ in fake.requests
        if method == "GET" and path.startswith("/api/projects/7/export")
    ]
    assert exported[-1] == ([1, 2, 3] if check_human else [3])  # the read-back, last


def test_a_label_studio_refusing_the_export_has_the_ids_read_from_the_list(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Label Studio Enterprise has no export of the tasks by id (404): the write-back reads
    what it made from the Data Manager's list instead, and says so once."""
    fake = FakeLabelStudio().start()
    fake.export_refused = True
    try:
        client = LabelStudioClient.connect(fake.url, "token")
        first = client.write_many(7, STANDARD, [_item(1), _item(2)])
        second = client.write_many(7, STANDARD, [_item(3)])
    finally:
        fake.stop()
    made = {t: p["id"] for t in (1, 2, 3) for p in fake.predictions[t]}
    assert {t: w.prediction_id for t, w in (first | second).items()} == made
    exports = [p for m, p, _, _ in fake.requests if m == "GET" and "/export" in p]
    assert len(exports) == 1  # refused once, then not asked again
    refused = [r for r in caplog.records if "refused the export" in r.getMessage()]
    assert len(refused) == 1


def test_without_reading_back_from_the_export_the_ids_are_read_from_the_list() -> None:
    """``LABEL_STUDIO_READ_BACK_EXPORT=false``: Label Studio keeps no copy of an export."""
    fake = FakeLabelStudio().start()
    try:
        client = LabelStudioClient.connect(fake.url, "token", read_back_export=False)
        written = client.write_many(7, STANDARD, [_item(1), _item(2)])
    finally:
        fake.stop()
    made = {t: p["id"] for t in (1, 2) for p in fake.predictions[t]}
    assert {t: w.prediction_id for t, w in written.items()} == made
    assert not [p for m, p, _, _ in fake.requests if m == "GET" and "/export" in p]


def test_nothing_to_write_makes_no_call() -> None:
    """Label Studio reads an empty selection as every task of the project."""
    fake = FakeLabelStudio().start()
    try:
        assert LabelStudioClient.connect(fake.url, "token").write_many(7, STANDARD, []) == {}
    finally:
        fake.stop()
    assert fake.requests == []


def test_a_judge_token_refused_the_bulk_action_annotates_one_by_one_as_the_judge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeLabelStudio().start()
    fake.judge_tokens = {"judge-token": 42}
    fake.actions_refused = True
    try:
        client = LabelStudioClient.connect(fake.url, "token", "judge-token")
        written = client.write_many(7, STANDARD, [_item(1), _item(2)])
        client.write_many(7, STANDARD, [_item(3)])
    finally:
        fake.stop()
    assert sorted(written) == [1, 2] and all(w.annotation_id for w in written.values())
    assert [a["completed_by"] for t in (1, 2, 3) for a in fake.annotations[t]] == [42, 42, 42]
    refused = [r for r in caplog.records if "predictions to annotations" in r.getMessage()]
    assert len(refused) == 1


def test_a_judge_token_annotates_a_whole_write_back_in_one_action() -> None:
    fake = FakeLabelStudio().start()
    fake.judge_tokens = {"judge-token": 42}
    try:
        client = LabelStudioClient.connect(fake.url, "token", "judge-token")
        written = client.write_many(7, STANDARD, [_item(t) for t in (1, 2, 3)])
    finally:
        fake.stop()
    converted = [b for _, p, _, b in fake.requests if "predictions_to_annotations" in p]
    assert [(b["selectedItems"]["included"], b["model_version"]) for b in converted] == [
        ([1, 2, 3], "test")
    ]
    assert not [p for m, p, _, _ in fake.requests if m == "POST" and "/annotations" in p]
    assert all(fake.annotations[t][0]["completed_by"] == 42 for t in (1, 2, 3))
    assert {t: w.annotation_id for t, w in written.items()} == {
        t: fake.annotations[t][0]["id"] for t in (1, 2, 3)
    }
