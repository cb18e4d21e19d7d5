"""GET /status: the campaign at a glance, and numbers that match the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from lm.fake_llm_server import FakeLLMServer

from hyper_ls_backend.cli import main
from hyper_ls_backend.priors import load_default_router
from hyper_ls_backend.server.status import (
    MAX_AUDIT_INTERVAL,
    Budget,
    FewAudits,
    Routes,
    agreement,
    agreement_by_tag,
    ai_label_accuracy,
    campaign_warnings,
)

from .harness import (
    PROJECT,
    ScriptedJudge,
    annotation_event,
    judge_settings,
    make_settings,
    serve,
    setup_body,
    task,
    tasks_created,
)


def test_status_reports_budget_routes_agreement_spend_and_features(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.5, hyper_human_label_cost=2.0)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created([task(i, "a") for i in range(1, 21)]))
        humans = [i for i in range(1, 21) if model.store.decision(PROJECT, i).route == "human"]
        for n, task_id in enumerate(humans):
            choice = "A-is-clearly-better" if n % 2 else "B-is-clearly-better"
            client.post(
                "/webhook",
                json=annotation_event("ANNOTATION_CREATED", 500 + task_id, task_id, choice),
            )
        body = client.get("/status", params={"project": PROJECT}).json()
        prior_version = model.pipeline.routers.prior.version
        missing = client.get("/status", params={"project": 999})
    routes = body["routes"]
    assert routes["received"] == 20
    assert routes["ai"] + routes["human"] + routes["audit"] + routes["forced"] == 20
    assert body["budget"] == {"share": 0.5, "allowed": 10, "used": 10, "left": 0, "over": 0}
    assert routes["human"] + routes["audit"] + routes["forced"] == body["budget"]["used"]
    measured = body["judge_agreement"]
    assert measured["n"] == len(humans) == 10 and measured["agree"] == 5
    low, high = measured["ci95"]
    assert low < 0.5 < high
    assert body["spend"]["human_cost_saved_usd"] == routes["ai"] * 2.0
    assert body["spend"]["input_tokens"] > 0
    assert body["top_features"] and {"feature", "weight"} <= set(body["top_features"][0])
    assert body["model_version"] == prior_version
    assert [(v["version"], v["in_use"], v["verdict"]) for v in body["router_versions"]] == [
        (prior_version, True, "starting router")
    ]
    assert body["training"] == {"every": 50, "labels_since_last": 10, "last": None}
    assert "over_budget" not in {w["kind"] for w in body["warnings"]}
    assert missing.status_code == 404


def test_status_command_prints_the_backends_answer_or_a_clear_error(capsys) -> None:
    code = main(["status", "--project", "1", "--backend-url", "http://127.0.0.1:9"])
    assert code == 2
    assert "no backend at http://127.0.0.1:9" in capsys.readouterr().err


def test_agreement_by_tag_covers_every_labelled_task_in_each_dimension() -> None:
    labelled = [
        ({"category": "math", "safety_concern": "high"}, ("A", "A")),
        ({"category": "math"}, ("A", "B")),
        ({"category": "code"}, ("tie", "tie")),
        ({}, ("B", "B")),
    ]
    table = agreement_by_tag(labelled)
    assert list(table) == ["category", "safety_concern"]
    assert {value: (a.n, a.agree) for value, a in table["category"].items()} == {
        "code": (1, 1),
        "math": (2, 1),
        "unknown": (1, 1),
    }
    assert {value: (a.n, a.agree) for value, a in table["safety_concern"].items()} == {
        "high": (1, 1),
        "unknown": (3, 2),
    }
    assert agreement_by_tag([]) == {}


def test_ai_label_accuracy_scales_the_audit_interval_or_says_there_are_no_audits() -> None:
    none_yet = ai_label_accuracy(40, agreement([]))
    assert none_yet.note == "no audits yet" and none_yet.expected_wrong_ci95 is None
    measured = agreement([("A", "A")] * 8 + [("A", "B")] * 2)
    estimate = ai_label_accuracy(40, measured)
    low, high = measured.ci95
    assert estimate.audits == measured and estimate.ai_labelled == 40
    assert estimate.expected_wrong_ci95 == pytest.approx((40 * (1 - high), 40 * (1 - low)))
    assert "10 audits" in estimate.note


def test_status_and_dashboard_refuse_a_project_id_no_database_holds(tmp_path: Path) -> None:
    """Found by the fuzz test: such an id reached SQLite and failed with a 500."""
    with serve(make_settings(tmp_path)) as (client, _):
        too_big = {"project": 2**63}
        answers = [client.get(path, params=too_big) for path in ("/status", "/dashboard")]
    assert [a.status_code for a in answers] == [422, 422]
    assert all("project" in str(a.json()["detail"]) for a in answers)


# -- warnings -------------------------------------------------------------------------------


def warnings_of(body: dict) -> dict[str, dict]:
    return {warning["kind"]: warning for warning in body["warnings"]}


def test_a_campaign_whose_unreadable_tasks_are_forced_to_humans_is_warned_over_budget(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.25)
    unreadable = [{"id": i, "data": {"prompt": f"no responses {i}"}} for i in range(1, 9)]
    with serve(settings) as (client, _):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created(unreadable + [task(i, "a") for i in (9, 10)]))
        body = client.get("/status", params={"project": PROJECT}).json()
    assert body["budget"] == {"share": 0.25, "allowed": 2, "used": 8, "left": 0, "over": 6}
    assert (body["routes"]["forced"], body["routes"]["forced_unreadable"]) == (8, 8)
    over = warnings_of(body)["over_budget"]
    counts = (over["allowed"], over["used"], over["forced"], over["forced_unreadable"])
    assert counts == (2, 8, 8, 8)
    assert over["message"].startswith("Over budget: 8 tasks went to humans, 2 allowed")
    assert "8 were forced to humans whatever the budget (8 could not be read" in over["message"]


def routes(ai: int, audit: int) -> Routes:
    return Routes(received=100, ai=ai, human=10, audit=audit, forced=0, forced_unreadable=0)


def few_audits(ai: int, audited: list[tuple[str, str]], routed: int) -> FewAudits | None:
    """The "not enough audits" warning for a campaign of ``ai`` AI labels, ``routed``
    audits of which ``audited`` are labelled (judge, human), or None."""
    budget = Budget(share=0.25, allowed=25, used=10 + routed, left=15 - routed, over=0)
    accuracy = ai_label_accuracy(ai, agreement(audited))
    router = load_default_router()
    found = campaign_warnings(budget, routes(ai, routed), accuracy, 0.05, router, [])
    assert all(isinstance(w, FewAudits) for w in found)
    return found[0] if found else None


def test_too_few_audits_for_the_accuracy_estimate_are_warned_with_their_interval() -> None:
    vague = few_audits(ai=80, audited=[("A", "A")] * 6 + [("A", "B")], routed=9)
    assert vague is not None
    low, high = agreement([("A", "A")] * 6 + [("A", "B")]).ci95
    assert vague.ci95 == (low, high) and high - low > MAX_AUDIT_INTERVAL
    assert (vague.audits_labelled, vague.audits_routed, vague.ai_labelled) == (7, 9, 80)
    assert f"between {low:.0%} and {high:.0%}" in vague.message
    assert "7 of the 9 audits" in vague.message and "label the 2 waiting" in vague.message

    unlabelled = few_audits(ai=80, audited=[], routed=3)
    assert unlabelled is not None and unlabelled.ci95 is None
    assert "none of the 3 audits has a human label yet" in unlabelled.message
    never_drawn = few_audits(ai=80, audited=[], routed=0)
    assert never_drawn is not None and "HYPER_AUDIT_SHARE is 5%" in never_drawn.message

    enough = [("A", "A")] * 380 + [("A", "B")] * 20
    assert few_audits(ai=80, audited=enough, routed=400) is None
    assert few_audits(ai=0, audited=[], routed=0) is None  # no AI label to measure


def test_audits_seen_through_status_are_warned_too_few(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    settings = judge_settings(tmp_path, llm.base_url, hyper_budget=0.5, hyper_audit_share=1.0)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created([task(i, "a") for i in range(1, 21)]))
        audits = [i for i in range(1, 21) if model.store.decision(PROJECT, i).audit]
        event = annotation_event("ANNOTATION_CREATED", 900, audits[0], "A-is-clearly-better")
        client.post("/webhook", json=event)
        body = client.get("/status", params={"project": PROJECT}).json()
    warning = warnings_of(body)["few_audits"]
    assert warning["audits_labelled"] == body["ai_label_accuracy"]["audits"]["n"] == 1
    assert warning["audits_routed"] == body["routes"]["audit"] == len(audits)
    assert warning["ci95"] == body["ai_label_accuracy"]["audits"]["ci95"]


def test_a_router_in_use_worse_than_chance_on_the_campaign_is_warned(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    """The refit measured the router in use at AUC 0.25 on the campaign's labels and kept
    it: the warning says so. A router measured better than chance, or one no longer in use,
    raises none."""
    settings = judge_settings(tmp_path, llm.base_url)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        prior = model.pipeline.routers.prior.version

        def kinds() -> set[str]:
            body = client.get("/status", params={"project": PROJECT}).json()
            return set(warnings_of(body))

        model.store.record_refit(PROJECT, 40, "other-version", False, prior, 0.62, "noise")
        better = kinds()
        model.store.record_refit(PROJECT, 60, "another", False, prior, 0.25, "within noise")
        worse = client.get("/status", params={"project": PROJECT}).json()
        adopted = {**model.pipeline.routers.prior.to_dict(), "version": "v1"}
        model.store.record_router(PROJECT, "v1", adopted, {}, adopt=True)
        model.store.record_refit(PROJECT, 70, "v1", True, "v1", 0.7, "it ranks better")
        elsewhere = kinds()  # the prior measured 0.25, but it is no longer in use
    assert "router_worse_than_chance" not in better | elsewhere
    warning = warnings_of(worse)["router_worse_than_chance"]
    assert (warning["version"], warning["auc"], warning["n_labels"]) == (prior, 0.25, 60)
    assert "AUC 0.25 on 60 labelled tasks" in warning["message"]
    assert warning["message"].endswith("kept it because within noise.")


# -- versions and the last training -----------------------------------------------------------


def test_each_router_version_is_listed_once_with_what_became_of_it(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    """A refit replayed (the same version recorded again) still lists it once."""
    settings = judge_settings(tmp_path, llm.base_url)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        prior, store = model.pipeline.routers.prior, model.store

        def artifact(version: str) -> dict:
            return {**prior.to_dict(), "version": version}

        store.record_refit(PROJECT, 10, None, False, prior.version, None, "only 10 labelled")
        store.record_router(PROJECT, "v1", artifact("v1"), {"held_out_auc": 0.7}, adopt=True)
        store.record_refit(PROJECT, 50, "v1", True, "v1", 0.7, "it ranks better")
        store.record_router(PROJECT, "v1", artifact("v1"), {"held_out_auc": 0.7}, adopt=True)
        store.record_router(PROJECT, "v2", artifact("v2"), {"held_out_auc": 0.6}, adopt=False)
        store.record_refit(PROJECT, 90, "v2", False, "v1", 0.72, "its AUC is lower")
        body = client.get("/status", params={"project": PROJECT}).json()
    assert body["model_version"] == "v1"
    versions = [(v["version"], v["in_use"], v["summary"]) for v in body["router_versions"]]
    assert versions == [
        ("v1", True, "adopted on 50 labelled tasks, in use: it ranks better"),
        ("v2", False, "not adopted: kept v1 because its AUC is lower"),
    ]
    last = body["training"]["last"]
    assert (last["n_labels"], last["adopted"], last["candidate"]) == (90, False, "v2")
    assert last["summary"] == "kept v1 (candidate v2 not adopted) because its AUC is lower"
