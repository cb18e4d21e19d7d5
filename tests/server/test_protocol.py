"""/health, /setup, /predict, basic auth, /metrics and secrets, through FastAPI's TestClient."""

from __future__ import annotations

import base64
import gc
import logging
import time
from pathlib import Path
from urllib.parse import unquote_plus

import pytest
from lm.fake_llm_server import FakeLLMServer

from .harness import (
    CONFIG_3WAY,
    CONFIG_5POINT,
    JUDGE_KEY,
    LS_KEY,
    PROJECT,
    FakeLabelStudio,
    ScriptedJudge,
    judge_settings,
    make_settings,
    predict_body,
    serve,
    setup_body,
    task,
    tasks_created,
)


def test_a_started_app_keeps_its_start_up_objects_from_the_collector_until_it_stops(
    tmp_path: Path,
) -> None:
    frozen_before = gc.get_freeze_count()
    with serve(make_settings(tmp_path)) as (client, _):
        frozen = gc.get_freeze_count()
        assert client.get("/health").status_code == 200
    assert frozen > frozen_before + 100_000  # the libraries and the model, at least
    assert gc.get_freeze_count() == 0  # given back: a stopped app's objects can be freed


# -- /health --------------------------------------------------------------------------------


def test_health_is_up_and_says_plainly_that_no_judge_is_configured(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, _):
        response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "UP"
    assert body["model_class"] == "HyperRouter"
    assert body["judge"] == "none"
    assert any("no LM judge configured" in note for note in body["notes"])
    assert any("every task goes to humans" in note for note in body["notes"])


def test_health_names_the_judge_model_when_one_is_configured(
    tmp_path: Path, llm: FakeLLMServer
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_judge_model="claude-test-1")
    with serve(settings) as (client, _):
        body = client.get("/health").json()
    assert body["status"] == "UP"
    assert body["judge"] == "claude-test-1"
    assert not any("no LM judge" in note for note in body["notes"])


# -- /setup ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [CONFIG_3WAY, CONFIG_5POINT], ids=["3way", "5point"])
def test_setup_accepts_the_shipped_configs_well_within_three_seconds(
    tmp_path: Path, config: str
) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        start = time.perf_counter()
        response = client.post("/setup", json=setup_body(config))
        elapsed = time.perf_counter() - start
        stored = model.store.project(PROJECT)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"]
    assert elapsed < 1.0, f"/setup took {elapsed:.2f}s; Label Studio gives it 3 s"
    assert stored is not None and stored.label_config == config


NO_CHOICES = '<View><Text name="prompt" value="$prompt"/><Text name="response_a" \
value="$response_a"/><Text name="response_b" value="$response_b"/></View>'
ONE_RESPONSE = '<View><Text name="prompt" value="$prompt"/><Text name="response_a" \
value="$response_a"/><Choices name="preference" toName="prompt"><Choice value="A"/>\
<Choice value="B"/><Choice value="Tie"/></Choices></View>'
NO_B = CONFIG_3WAY.replace('<Choice value="B"/>', "")
MULTIPLE = CONFIG_3WAY.replace('choice="single-radio"', 'choice="multiple"')


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (NO_CHOICES, "<Choices>"),
        (ONE_RESPONSE, "two response"),
        (NO_B, "no choice for B"),
        (MULTIPLE, "several answers"),
        ("<View><Text name='prompt' value='$prompt'>", "not valid XML"),
    ],
    ids=["no-choices", "one-response", "no-b", "multiple-choice", "broken-xml"],
)
def test_setup_rejects_unusable_configs_naming_what_is_missing(
    tmp_path: Path, config: str, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusal says why in its own body, in the 422 its redirect ends on (the text Label
    Studio shows: it keeps only the status and the URL), and in the backend's log."""
    with serve(make_settings(tmp_path)) as (client, model), caplog.at_level(logging.WARNING):
        refused = client.post("/setup", json=setup_body(config), follow_redirects=False)
        followed = client.post("/setup", json=setup_body(config))
        assert model.store.project(PROJECT) is None
    assert refused.status_code == 303
    assert named in refused.json()["detail"]
    assert followed.status_code == 422
    assert named.strip("<>") in followed.json()["detail"]
    assert named.strip("<>") in unquote_plus(str(followed.url))
    assert f"/setup of project {PROJECT} refused: " in caplog.text and named in caplog.text


@pytest.mark.parametrize(
    ("extra_params", "named"),
    [
        ({"hyper_budgit": 0.5}, "hyper_budgit"),
        ({"label_studio_api_key": "x"}, "label_studio_api_key"),
        ({"hyper_budget": 1.5}, "hyper_budget"),
        ({"hyper_ai_mode": "sometimes"}, "hyper_ai_mode"),
        ('{"hyper_budget": ', "not a JSON object"),
        ("[0.5]", "must be a JSON object"),
    ],
    ids=["unknown-key", "not-overridable", "budget-range", "bad-enum", "bad-json", "json-list"],
)
def test_setup_rejects_bad_extra_params_with_422(
    tmp_path: Path, extra_params: object, named: str
) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        response = client.post("/setup", json=setup_body(extra_params=extra_params))
        assert model.store.project(PROJECT) is None
    assert response.status_code == 422
    assert named in response.json()["detail"]


def test_setup_stores_extra_params_given_as_an_object(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        response = client.post("/setup", json=setup_body(extra_params={"hyper_budget": 0.5}))
        assert response.status_code == 200
        assert model.store.project(PROJECT).extra_params == {"hyper_budget": 0.5}


def test_setup_stores_extra_params_given_as_a_json_string(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        response = client.post("/setup", json=setup_body(extra_params='{"hyper_budget": 0.5}'))
        assert response.status_code == 200
        assert model.store.project(PROJECT).extra_params == {"hyper_budget": 0.5}


def test_setup_rejects_an_unreadable_project_id(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, _):
        response = client.post("/setup", json=setup_body() | {"project": "abc.123"})
    assert response.status_code == 422


def test_setup_again_replaces_the_config(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        assert client.post("/setup", json=setup_body(CONFIG_3WAY)).status_code == 200
        assert client.post("/setup", json=setup_body(CONFIG_5POINT)).status_code == 200
        assert model.store.project(PROJECT).label_config == CONFIG_5POINT


# -- /predict -------------------------------------------------------------------------------


def test_predict_for_a_never_set_up_project_is_409(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, model):
        response = client.post("/predict", json=predict_body([task(1)], project=99))
        assert model.store.task(99, 1) is None
    assert response.status_code == 409
    assert "never set up" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"project": "7.1"}, "tasks"),
        ({"tasks": "nope", "project": "7.1"}, "tasks"),
        ({"tasks": [{"data": {}}], "project": "7.1"}, "id"),
        ({"tasks": [{"id": "x1", "data": {}}], "project": "7.1"}, "id"),
        ({"tasks": [{"id": 1}], "project": "7.1"}, "data"),
        ({"tasks": [{"id": 1, "data": "text"}], "project": "7.1"}, "data"),
        ({"tasks": [task(1)]}, "project"),
        ({"tasks": [task(1)], "project": "seven"}, "project"),
    ],
    ids=[
        "no-tasks",
        "tasks-not-list",
        "task-no-id",
        "task-id-not-int",
        "task-no-data",
        "data-not-object",
        "no-project",
        "bad-project",
    ],
)
def test_predict_rejects_malformed_payloads_with_422_and_a_message(
    tmp_path: Path, body: dict, named: str
) -> None:
    with serve(make_settings(tmp_path)) as (client, _):
        client.post("/setup", json=setup_body())
        response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert named in str(response.json()["detail"])


def test_predict_without_judge_sends_every_task_to_humans_with_nothing_to_store(
    tmp_path: Path,
) -> None:
    """An empty list of predictions per task: Label Studio stores an empty prediction
    (``"result": []``) as a model's answer, but nothing for an empty list."""
    with serve(make_settings(tmp_path)) as (client, model):
        client.post("/setup", json=setup_body())
        response = client.post("/predict", json=predict_body([task(3), task(1), task(2)]))
        decisions = [model.store.decision(PROJECT, t) for t in (3, 1, 2)]
    assert response.status_code == 200
    assert response.json()["results"] == [[], [], []]
    assert [d.route for d in decisions] == ["human"] * 3
    assert all("no LM judge configured" in d.reasons[0] for d in decisions)


def test_predict_returns_one_result_per_task_in_order_with_the_judges_label(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge, fast_retries: None
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.0)
    tasks = [task(5, "a"), task(3, "b"), task(9, "tie"), task(4, "fail"), task(8, "a-slight")]
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body(CONFIG_5POINT))
        response = client.post("/predict", json=predict_body(tasks))
        routes = [model.store.decision(PROJECT, t["id"]).route for t in tasks]
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(tasks)
    assert routes == ["ai", "ai", "ai", "human", "ai"]
    assert results[3] == []  # the judge failed: human-routed, nothing to store
    choices = [r["result"][0]["value"]["choices"] for r in results[:3] + results[4:]]
    assert choices == [
        ["A-is-clearly-better"],
        ["B-is-clearly-better"],
        ["Tie"],
        ["A-is-slightly-better"],
    ]
    assert all(isinstance(r["score"], float) and r["model_version"] for r in results[:3])
    region = results[0]["result"][0]
    assert region["from_name"] == "preference" and region["to_name"] == "prompt"
    assert region["type"] == "choices"


def test_predict_maps_the_judges_label_onto_a_three_way_config(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.0)
    with serve(settings) as (client, _):
        client.post("/setup", json=setup_body(CONFIG_3WAY))
        response = client.post("/predict", json=predict_body([task(1, "b"), task(2, "a")]))
    results = response.json()["results"]
    assert [r["result"][0]["value"]["choices"] for r in results] == [["B"], ["A"]]


def test_predict_returns_the_stored_decision_without_judging_again(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.0)
    with serve(settings) as (client, _):
        client.post("/setup", json=setup_body())
        first = client.post("/predict", json=predict_body([task(1, "b")])).json()
        second = client.post("/predict", json=predict_body([task(2, "a"), task(1, "b")])).json()
    assert second["results"][1] == first["results"][0]
    assert judge.calls == {"task 1": 2, "task 2": 2}


def test_predict_stores_nothing_for_tasks_the_import_sent_to_humans(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    """What Label Studio asks when a human-routed task is opened: no pre-fill to store."""
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=1.0)
    tasks = [task(1, "a"), task(2, "biased"), task(3, "b")]
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created(tasks))
        routes = [model.store.decision(PROJECT, t["id"]).route for t in tasks]
        response = client.post("/predict", json=predict_body(tasks))
    assert routes == ["human"] * 3
    assert response.status_code == 200
    assert response.json()["results"] == [[], [], []]
    assert sum(judge.calls.values()) == 6, "decided by the import, not again by /predict"


def test_predict_adds_no_copy_of_a_prediction_the_write_back_made(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge, label_studio: FakeLabelStudio
) -> None:
    """A task opened before its import was routed is routed by /predict, whose write-back
    creates the prediction: Label Studio must not store the same answer again, nor later
    (after a refit it asks again for every task without the new model version's)."""
    settings = judge_settings(
        tmp_path,
        llm.base_url,
        hyper_budget=0.0,
        label_studio_url=label_studio.url,
        label_studio_api_key=LS_KEY,
    )
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        answers = [client.post("/predict", json=predict_body([task(1, "a")])) for _ in range(2)]
        decision = model.store.decision(PROJECT, 1)
    assert decision.route == "ai" and decision.prediction_id is not None
    assert [a.json()["results"] for a in answers] == [[[]], [[]]]
    assert len(label_studio.predictions[1]) == 1


def test_predict_with_no_tasks_answers_no_results(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, _):
        client.post("/setup", json=setup_body())
        response = client.post("/predict", json=predict_body([]))
    assert response.status_code == 200
    assert response.json() == {"results": []}


def test_predict_sends_an_unreadable_task_to_humans_not_an_error(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.0)
    broken = {"id": 2, "data": {"prompt": "hi", "response_a": "x"}}
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        response = client.post("/predict", json=predict_body([task(1), broken]))
        decision = model.store.decision(PROJECT, 2)
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first["result"] and second == []
    assert decision.route == "human"
    assert "data.response_b" in decision.reasons[0]


# -- basic auth -----------------------------------------------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH_CALLS = [
    ("get", "/health", None),
    ("post", "/setup", setup_body()),
    ("post", "/predict", predict_body([task(1)])),
    ("post", "/webhook", {"action": "PROJECT_UPDATED", "project": {"id": PROJECT}}),
    ("get", "/metrics", None),
]


@pytest.mark.parametrize(("method", "path", "body"), AUTH_CALLS, ids=[c[1] for c in AUTH_CALLS])
def test_basic_auth_guards_every_endpoint(
    tmp_path: Path, method: str, path: str, body: dict | None
) -> None:
    settings = make_settings(tmp_path, basic_auth_user="ls", basic_auth_pass="s3cret")
    with serve(settings) as (client, _):
        client.post("/setup", json=setup_body(), headers=basic("ls", "s3cret"))

        def call(headers: dict[str, str]) -> int:
            kwargs = {"headers": headers} | ({"json": body} if body is not None else {})
            return getattr(client, method)(path, **kwargs).status_code

        assert call({}) == 401
        assert call(basic("ls", "wrong")) == 401
        assert call(basic("someone", "s3cret")) == 401
        assert call({"Authorization": "Basic !!not-base64!!"}) == 401
        assert call({"Authorization": "Bearer s3cret"}) == 401
        assert call(basic("ls", "s3cret")) == 200


def test_without_basic_auth_configured_no_credentials_are_needed(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, _):
        assert client.get("/health").status_code == 200
        assert client.get("/health", headers=basic("any", "thing")).status_code == 200


def test_unauthorized_answer_asks_for_basic_auth(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, basic_auth_user="ls", basic_auth_pass="s3cret")
    with serve(settings) as (client, _):
        response = client.get("/health")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Basic"
    assert "s3cret" not in response.text


# -- /metrics -------------------------------------------------------------------------------


def test_metrics_exposes_prometheus_text_with_decision_counts(tmp_path: Path) -> None:
    project = 4242  # a project no other test uses: the registry is process-wide
    with serve(make_settings(tmp_path)) as (client, _):
        client.post("/setup", json=setup_body(project=project))
        client.post("/webhook", json=tasks_created([task(1), task(2), task(3)], project))
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE hyper_decisions gauge" in text
    assert f'hyper_decisions{{project="{project}",route="human"}} 3.0' in text
    assert 'hyper_webhooks_total{action="TASKS_CREATED"}' in text
    assert "hyper_pending_jobs 0.0" in text


# -- secrets --------------------------------------------------------------------------------


def test_api_keys_never_appear_in_logs_or_health(
    tmp_path: Path,
    llm: FakeLLMServer,
    judge: ScriptedJudge,
    label_studio: FakeLabelStudio,
    fast_retries: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = judge_settings(
        tmp_path,
        llm.base_url,
        hyper_budget=0.5,
        label_studio_url=label_studio.url,
        label_studio_api_key=LS_KEY,
        basic_auth_user="ls",
        basic_auth_pass="basic-SECRET-pass",
    )
    auth = basic("ls", "basic-SECRET-pass")
    with serve(settings) as (client, _):
        client.post("/setup", json=setup_body(extra_params={"hyper_budget": 2}), headers=auth)
        client.post("/setup", json=setup_body(), headers=auth)
        tasks = [task(1, "a"), task(2, "fail"), task(3, "biased"), {"id": 4, "data": {}}]
        client.post("/webhook", json=tasks_created(tasks), headers=auth)
        client.post("/predict", json=predict_body(tasks), headers=auth)
        client.get("/health")  # unauthorized
        health = client.get("/health", headers=auth).text
        metrics = client.get("/metrics", headers=auth).text
    # the keys were really used
    assert any(JUDGE_KEY in " ".join(r.headers.values()) for r in llm.requests)
    assert any(LS_KEY in " ".join(h.values()) for _, _, h, _ in label_studio.requests)
    for secret in (JUDGE_KEY, LS_KEY, "basic-SECRET-pass", "SECRET"):
        assert secret not in caplog.text
        assert secret not in health
        assert secret not in metrics
