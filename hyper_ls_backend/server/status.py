"""A project's campaign at a glance (``GET /status``): budget, routes, judge quality, spend.

Judge-human agreement is measured on every task with both a judge verdict and a human
label, with a Wilson 95% interval, overall and per value of each descriptive tag. On audits
alone it estimates, without bias, the accuracy of the AI-labelled set: audits are a uniform
random share of the tasks the router would give the judge, whereas the router's own human
picks are the hard cases, so agreement on all human labels understates it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel
from scipy.stats import binomtest

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.policy import budget_count
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.settings import Settings
from hyper_ls_backend.store import Store

TOP_FEATURES = 10


class Agreement(BaseModel):
    n: int
    agree: int
    rate: float | None
    ci95: tuple[float, float] | None


class AccuracyEstimate(BaseModel):
    """The AI-labelled set's accuracy (agreement with one human), estimated from audits."""

    ai_labelled: int
    audits: Agreement
    expected_wrong_ci95: tuple[float, float] | None
    """How many of the ``ai_labelled`` labels are likely wrong (the interval, scaled)."""
    note: str


class ProjectStatus(BaseModel):
    project: int
    model_version: str
    budget: dict[str, Any]
    routes: dict[str, int]
    judge_agreement: Agreement
    """The judges' label (the panel's, with a panel) against the first human vote."""
    agreement_by_judge: dict[str, Agreement]
    """Each judge's own label against the first human vote, by judge model."""
    ai_label_accuracy: AccuracyEstimate
    agreement_by_tag: dict[str, dict[str, Agreement]]
    """Per tag dimension (``category``, ``safety_concern``, ...) and value; a labelled task
    without the tag counts under ``unknown``, so each dimension covers ``judge_agreement``."""
    spend: dict[str, float]
    router_versions: list[dict[str, Any]]
    top_features: list[dict[str, Any]]


def agreement(pairs: list[tuple[str, str]]) -> Agreement:
    agree = sum(judge == human for judge, human in pairs)
    if not pairs:
        return Agreement(n=0, agree=0, rate=None, ci95=None)
    interval = binomtest(agree, len(pairs)).proportion_ci(method="wilson")
    return Agreement(
        n=len(pairs), agree=agree, rate=agree / len(pairs), ci95=(interval.low, interval.high)
    )


def ai_label_accuracy(ai_labelled: int, audits: Agreement) -> AccuracyEstimate:
    if audits.ci95 is None:
        return AccuracyEstimate(
            ai_labelled=ai_labelled, audits=audits, expected_wrong_ci95=None, note="no audits yet"
        )
    low, high = audits.ci95
    return AccuracyEstimate(
        ai_labelled=ai_labelled,
        audits=audits,
        expected_wrong_ci95=(ai_labelled * (1 - high), ai_labelled * (1 - low)),
        note=f"from {audits.n} audits, a uniform random share of the judge-bound tasks",
    )


def agreement_by_tag(
    labelled: list[tuple[dict[str, str], tuple[str, str]]],
) -> dict[str, dict[str, Agreement]]:
    """Agreement per tag dimension and value, from (tags, (judge, human)) pairs."""
    dimensions = sorted({dimension for tags, _ in labelled for dimension in tags})
    table: dict[str, dict[str, Agreement]] = {}
    for dimension in dimensions:
        groups: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
        for tags, pair in labelled:
            groups[tags.get(dimension, "unknown")].append(pair)
        table[dimension] = {value: agreement(pairs) for value, pairs in sorted(groups.items())}
    return table


def project_status(
    store: Store, settings: Settings, project_id: int, router: Router
) -> ProjectStatus:
    routes = store.route_counts(project_id)
    humans = routes["human"] + routes["audit"] + routes["forced"]
    allowed = budget_count(settings.hyper_budget, routes["received"])
    labelled, audit_pairs = [], []
    by_judge: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
    for record, audit, _ in store.labelled_comparisons(project_id):
        comparison = Comparison.model_validate(record)
        verdicts = comparison.judges or ([comparison.judge] if comparison.judge else [])
        for verdict in verdicts:
            if verdict.label is not None:
                by_judge[verdict.model or "judge"].append(
                    (verdict.label.value, comparison.first_human.value)
                )
        if comparison.judge_label is None:
            continue
        pair = (comparison.judge_label.value, comparison.first_human.value)
        labelled.append((comparison.all_tags, pair))
        if audit:
            audit_pairs.append(pair)
    spend = store.lm_spend(project_id)
    spend["human_label_usd"] = settings.hyper_human_label_cost
    spend["human_cost_saved_usd"] = routes["ai"] * settings.hyper_human_label_cost
    return ProjectStatus(
        project=project_id,
        model_version=router.version,
        budget={
            "share": settings.hyper_budget,
            "allowed": allowed,
            "used": humans,
            "left": max(allowed - humans, 0),
        },
        routes=routes,
        judge_agreement=agreement([pair for _, pair in labelled]),
        agreement_by_judge={model: agreement(pairs) for model, pairs in sorted(by_judge.items())},
        ai_label_accuracy=ai_label_accuracy(routes["ai"], agreement(audit_pairs)),
        agreement_by_tag=agreement_by_tag(labelled),
        spend=spend,
        router_versions=[
            {
                "version": v.version,
                "active": v.active,
                "adopted": v.adopted,
                "quality": v.quality,
                "created_at": v.created_at.isoformat(),
            }
            for v in store.router_versions(project_id)
        ],
        top_features=router.feature_weights()[:TOP_FEATURES],
    )
