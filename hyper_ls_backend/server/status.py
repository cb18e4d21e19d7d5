"""A project's campaign at a glance (``GET /status``): budget, routes, judge quality, spend.

Judge-human agreement is measured on every task with both a judge verdict and a human
label, with a Wilson 95% interval; on audits alone it is an unbiased estimate of the
judge's accuracy on what it labels (the router sends humans the hard cases, so agreement on
all human labels understates it).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel
from scipy.stats import binomtest

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.router import Router, budget_count
from hyper_ls_backend.settings import Settings
from hyper_ls_backend.store import Store

TOP_FEATURES = 10


class Agreement(BaseModel):
    n: int
    agree: int
    rate: float | None
    ci95: tuple[float, float] | None


class ProjectStatus(BaseModel):
    project: int
    model_version: str
    budget: dict[str, Any]
    routes: dict[str, int]
    judge_agreement: Agreement
    audit_agreement: Agreement
    agreement_by_category: dict[str, Agreement]
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


def project_status(
    store: Store, settings: Settings, project_id: int, router: Router
) -> ProjectStatus:
    routes = store.route_counts(project_id)
    humans = routes["human"] + routes["audit"] + routes["forced"]
    allowed = budget_count(settings.hyper_budget, routes["received"])
    pairs, audit_pairs, by_category = [], [], defaultdict(list)
    for record, audit in store.labelled_comparisons(project_id):
        comparison = Comparison.model_validate(record)
        if comparison.judge_label is None:
            continue
        pair = (comparison.judge_label.value, comparison.first_human.value)
        pairs.append(pair)
        if audit:
            audit_pairs.append(pair)
        by_category[comparison.all_tags.get("category", "unknown")].append(pair)
    spend = store.lm_spend(project_id)
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
        judge_agreement=agreement(pairs),
        audit_agreement=agreement(audit_pairs),
        agreement_by_category={k: agreement(v) for k, v in sorted(by_category.items())},
        spend=spend,
        router_versions=[
            {
                "version": v.version,
                "active": v.active,
                "quality": v.quality,
                "created_at": v.created_at.isoformat(),
            }
            for v in store.router_versions(project_id)
        ],
        top_features=router.feature_weights()[:TOP_FEATURES],
    )
