"""A project's campaign at a glance (``GET /status``): budget, routes, judge quality, spend,
router versions, the last training, and warnings a team lead must not miss.

Judge-human agreement is measured on every task with both a judge verdict and a human
label, with a Wilson 95% interval, overall and per value of each descriptive tag. On audits
alone it estimates, without bias, the accuracy of the AI-labelled set: audits are a uniform
random share of the tasks the router would give the judge, whereas the router's own human
picks are the hard cases, so agreement on all human labels understates it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, computed_field
from scipy.stats import binomtest

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.policy import budget_count
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.settings import Settings
from hyper_ls_backend.store import Store
from hyper_ls_backend.store.schema import CertificationRecord, RefitRecord, RouterVersion

TOP_FEATURES = 10
MAX_AUDIT_INTERVAL = 0.2
"""An accuracy estimate whose 95% interval is wider than this (20 points) is too vague to
act on: the "not enough audits" warning."""
CHANCE_AUC = 0.5


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


class Budget(BaseModel):
    share: float
    allowed: int
    used: int
    """Every task sent to humans: the router's picks, audits and forced tasks."""
    left: int
    over: int
    """Human labels used beyond those allowed (forced tasks go to humans whatever the budget)."""


class Routes(BaseModel):
    """Decisions by kind; ``human + audit + forced`` is the human queue, ``budget.used``."""

    received: int
    ai: int
    human: int
    """Sent to humans by the router's score (its picks and doubtful verdicts)."""
    audit: int
    """Drawn at random from the judge-bound tasks, to measure the judge."""
    forced: int
    """Could not go to the judge: unreadable, or no usable verdict."""
    forced_unreadable: int
    """Of ``forced``, the tasks that could not be read."""


class OverBudget(BaseModel):
    kind: Literal["over_budget"] = "over_budget"
    allowed: int
    used: int
    forced: int
    forced_unreadable: int
    share: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def message(self) -> str:
        head = (
            f"Over budget: {self.used} tasks went to humans, {self.allowed} allowed "
            f"({self.share:.0%} of the tasks received)."
        )
        if not self.forced:
            return head + (
                " None was forced, so the budget share must have been lowered after they "
                "were routed."
            )
        no_verdict = self.forced - self.forced_unreadable
        return head + (
            f" {self.forced} were forced to humans whatever the budget "
            f"({self.forced_unreadable} could not be read, {no_verdict} got no usable judge "
            "verdict): fix the import or the judge to bring them back within it."
        )


class FewAudits(BaseModel):
    kind: Literal["few_audits"] = "few_audits"
    ai_labelled: int
    audits_routed: int
    audits_labelled: int
    ci95: tuple[float, float] | None
    """The accuracy interval the labelled audits give (None: no labelled audit)."""
    audit_share: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def message(self) -> str:
        if self.ci95 is None:
            measured = f"The accuracy of the {self.ai_labelled} AI labels is not measured: "
            if not self.audits_routed:
                return measured + (
                    f"no task was drawn for an audit (HYPER_AUDIT_SHARE is {self.audit_share:.0%})."
                )
            return measured + f"none of the {self.audits_routed} audits has a human label yet."
        low, high = self.ci95
        waiting = self.audits_routed - self.audits_labelled
        todo = f"label the {waiting} waiting, or " if waiting > 0 else ""
        return (
            f"Not enough audits: {self.audits_labelled} of the {self.audits_routed} audits "
            f"sent to humans are labelled, so the accuracy of the {self.ai_labelled} AI labels "
            f"is only known to lie between {low:.0%} and {high:.0%} (95% interval): {todo}"
            f"raise HYPER_AUDIT_SHARE (now {self.audit_share:.0%})."
        )


class RouterWorseThanChance(BaseModel):
    kind: Literal["router_worse_than_chance"] = "router_worse_than_chance"
    version: str
    auc: float
    n_labels: int
    adopted: bool
    """Whether the refit that measured it adopted it (else it kept it)."""
    reason: str
    """Why that refit adopted or kept it."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def message(self) -> str:
        return (
            f"The router in use ({self.version}) measures worse than chance on this "
            f"campaign's labels: AUC {self.auc:.2f} on {self.n_labels} labelled tasks (0.5 is "
            "chance), so the tasks it sends to humans are those the judge most likely got "
            f"right. The refit that measured it {'adopted' if self.adopted else 'kept'} it "
            f"because {self.reason}."
        )


CampaignWarning = Annotated[
    OverBudget | FewAudits | RouterWorseThanChance, Field(discriminator="kind")
]


class RouterVersionStatus(BaseModel):
    """A router version, listed once, with what became of it in plain words."""

    version: str
    in_use: bool
    verdict: Literal["starting router", "adopted", "not adopted"]
    summary: str
    n_labels: int | None
    created_at: datetime | None
    quality: dict[str, Any]
    """Everything its refit measured (empty for the starting router)."""


class LastTraining(BaseModel):
    """The last refit (from ``HYPER_REFIT_EVERY`` labels or Label Studio's Start training)."""

    at: datetime
    n_labels: int
    adopted: bool
    candidate: str | None
    """The version it proposed and measured; None when there was too little to propose one."""
    in_use: str
    reason: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def summary(self) -> str:
        if self.adopted:
            return f"adopted {self.in_use} because {self.reason}"
        proposed = f" (candidate {self.candidate} not adopted)" if self.candidate else ""
        return f"kept {self.in_use}{proposed} because {self.reason}"


class Training(BaseModel):
    every: int
    """``HYPER_REFIT_EVERY``: a refit is queued once this many labels were saved since the
    last one."""
    labels_since_last: int
    """Labels saved (new or changed) since the last refit began."""
    last: LastTraining | None


class CurvePoint(BaseModel):
    """One threshold a certification look tried, as its audits measured it."""

    threshold: float
    n: int
    coverage: float
    """The audits' share under the threshold: about the share of tasks the judge may label."""
    agreement: float
    lower_bound: float
    passed: bool


class QualityTarget(BaseModel):
    """``HYPER_TARGET_AGREEMENT`` and where its guarantee stands (docs/guarantee.md)."""

    target_agreement: float
    confidence: float
    certified: bool
    """A certificate for the router in use: AI-routed tasks now pass its threshold."""
    threshold: float | None
    certified_agreement: float | None
    """The bound the last certification gives the AI labels under its threshold."""
    ai_share_allowed: float | None
    """The audits' share under the threshold: about the share the judge may label."""
    calibration: int
    """Labelled audits the last look read."""
    looks: int
    audit_share: float
    """The audit share routing uses now: the warm-up share until certified."""
    summary: str
    curve: list[CurvePoint]
    """The last look's risk-coverage curve: agreement and bound against share labelled."""


class BatchInFlight(BaseModel):
    """A Message Batch sent and not yet read back."""

    batch_id: str | None
    """None while it is being sent."""
    model: str
    status: Literal["submitting", "in_progress"]
    requests: int
    created_at: datetime
    expires_at: datetime | None


class Batches(BaseModel):
    """The judge's calls through Anthropic's Message Batches API (``HYPER_JUDGE_BATCH``)."""

    in_flight: list[BatchInFlight] = Field(default_factory=list)
    sent: int = 0
    """Batches the API took, ever."""
    calls: int = 0
    """Judge calls answered in a batch."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    """What they cost, at the batch price (half the listed price per token)."""
    list_cost_usd: float = 0.0
    """What the same tokens cost one call at a time."""
    saved_usd: float = 0.0


class ProjectStatus(BaseModel):
    project: int
    model_version: str
    """The router in use: what Label Studio shows as the backend's model version."""
    warnings: list[CampaignWarning]
    budget: Budget
    routes: Routes
    judge_agreement: Agreement
    """The judges' label (the panel's, with a panel) against the first human vote."""
    agreement_by_judge: dict[str, Agreement]
    """Each judge's own label against the first human vote, by judge model."""
    ai_label_accuracy: AccuracyEstimate
    agreement_by_tag: dict[str, dict[str, Agreement]]
    """Per tag dimension (``category``, ``safety_concern``, ...) and value; a labelled task
    without the tag counts under ``unknown``, so each dimension covers ``judge_agreement``."""
    spend: dict[str, float | None]
    """Every judge call's cost (``cost_usd``, batch calls at the batch price), tokens, the
    comparisons judged and ``cost_per_1000_comparisons_usd`` (None before the first),
    against the human cost saved."""
    batches: Batches = Field(default_factory=Batches)
    router_versions: list[RouterVersionStatus]
    """Oldest first, each version once."""
    training: Training
    quality_target: QualityTarget | None = None
    """None without ``HYPER_TARGET_AGREEMENT``."""
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


def campaign_warnings(
    budget: Budget,
    routes: Routes,
    accuracy: AccuracyEstimate,
    audit_share: float,
    router: Router,
    refits: list[RefitRecord],
) -> list[CampaignWarning]:
    """Over budget; too few audits for the accuracy estimate to mean much (there are AI
    labels and its interval is wider than ``MAX_AUDIT_INTERVAL``); the router in use
    worse than chance as its latest measurement on the campaign's labels found."""
    warnings: list[CampaignWarning] = []
    if budget.over:
        warnings.append(
            OverBudget(
                allowed=budget.allowed,
                used=budget.used,
                forced=routes.forced,
                forced_unreadable=routes.forced_unreadable,
                share=budget.share,
            )
        )
    interval = accuracy.audits.ci95
    if accuracy.ai_labelled and (
        interval is None or interval[1] - interval[0] > MAX_AUDIT_INTERVAL
    ):
        warnings.append(
            FewAudits(
                ai_labelled=accuracy.ai_labelled,
                audits_routed=routes.audit,
                audits_labelled=accuracy.audits.n,
                ci95=interval,
                audit_share=audit_share,
            )
        )
    measured = [r for r in refits if r.in_use == router.version and r.in_use_auc is not None]
    if measured and measured[-1].in_use_auc < CHANCE_AUC:
        latest = measured[-1]
        warnings.append(
            RouterWorseThanChance(
                version=router.version,
                auc=latest.in_use_auc,
                n_labels=latest.n_labels,
                adopted=latest.adopted,
                reason=latest.reason,
            )
        )
    return warnings


def version_summary(
    version: RouterVersion, in_use: bool, refit: RefitRecord | None
) -> tuple[Literal["adopted", "not adopted"], str]:
    """The version's verdict and what became of it, in plain words."""
    if version.adopted:
        state = "in use" if in_use else "since replaced"
        if refit is None:  # refitted before verdicts were recorded
            return "adopted", f"adopted, {state}"
        return "adopted", f"adopted on {refit.n_labels} labelled tasks, {state}: {refit.reason}"
    if refit is None:
        return "not adopted", "not adopted"
    return "not adopted", f"not adopted: kept {refit.in_use} because {refit.reason}"


def router_versions(
    versions: list[RouterVersion], refits: list[RefitRecord], router: Router
) -> list[RouterVersionStatus]:
    """Each stored version once, oldest first, after the starting router when that is the
    one in use (never refitted, or adopted ones all unusable)."""
    refit_of = {refit.candidate: refit for refit in refits if refit.candidate}
    listed = []
    for v in versions:
        in_use, refit = v.version == router.version, refit_of.get(v.version)
        verdict, summary = version_summary(v, in_use, refit)
        listed.append(
            RouterVersionStatus(
                version=v.version,
                in_use=in_use,
                verdict=verdict,
                summary=summary,
                n_labels=refit.n_labels if refit else None,
                created_at=utc(v.created_at),
                quality=v.quality,
            )
        )
    if any(v.in_use for v in listed):
        return listed
    starting = RouterVersionStatus(
        version=router.version,
        in_use=True,
        verdict="starting router",
        summary="the router the backend started with, in use: no refit was adopted",
        n_labels=None,
        created_at=None,
        quality={},
    )
    return [starting, *listed]


def utc(moment: datetime) -> datetime:
    """SQLite gives back the stored UTC times without their zone: say it."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def last_training(refits: list[RefitRecord]) -> LastTraining | None:
    if not refits:
        return None
    last = refits[-1]
    return LastTraining(
        at=utc(last.created_at),
        n_labels=last.n_labels,
        adopted=last.adopted,
        candidate=last.candidate,
        in_use=last.in_use,
        reason=last.reason,
    )


def quality_target(
    settings: Settings, looks: list[CertificationRecord], router: Router
) -> QualityTarget | None:
    target = settings.hyper_target_agreement
    if target is None:
        return None
    last = looks[-1] if looks else None
    certificate = last.certificate(router.version) if last else None
    warmup = max(settings.hyper_audit_share, settings.hyper_warmup_audit_share)
    promise = f"{target:.0%} at {settings.hyper_target_confidence:.0%} confidence"
    if certificate is not None:
        summary = (
            f"Certified: the judge labels only tasks scoring at most {certificate.threshold:.4f}, "
            f"where its labels agree with a single human at least "
            f"{certificate.lower_bound:.1%} of the time (target {promise}; "
            f"{certificate.n_calibration} labelled audits, look {last.look})."
        )
    else:
        why = last.reason if last else "no labelled audits have been looked at yet"
        summary = (
            f"Not yet certified ({why}). Until a threshold is certified for target {promise}, "
            f"tasks are routed by the budget, {warmup:.0%} of them audited, and AI labels "
            "carry no guarantee."
        )
    return QualityTarget(
        target_agreement=target,
        confidence=settings.hyper_target_confidence,
        certified=certificate is not None,
        threshold=certificate.threshold if certificate else None,
        certified_agreement=certificate.lower_bound if certificate else None,
        ai_share_allowed=last.coverage if certificate else None,
        calibration=last.n_calibration if last else 0,
        looks=len(looks),
        audit_share=settings.hyper_audit_share if certificate else warmup,
        summary=summary,
        curve=[CurvePoint(**point) for point in (last.curve if last else [])],
    )


def batches_status(store: Store, project_id: int) -> Batches:
    records = store.batches_of(project_id)
    spend = store.batch_spend(project_id)
    return Batches(
        in_flight=[
            BatchInFlight(
                batch_id=r.batch_id,
                model=r.model,
                status=r.status,
                requests=r.requests,
                created_at=utc(r.created_at),
                expires_at=utc(r.expires_at) if r.expires_at else None,
            )
            for r in records
            if r.status in ("submitting", "in_progress")
        ],
        sent=sum(r.batch_id is not None for r in records),
        calls=spend["calls"],
        input_tokens=spend["input_tokens"],
        output_tokens=spend["output_tokens"],
        cost_usd=spend["cost_usd"],
        list_cost_usd=spend["list_cost_usd"],
        saved_usd=spend["list_cost_usd"] - spend["cost_usd"],
    )


def project_status(
    store: Store, settings: Settings, project_id: int, router: Router
) -> ProjectStatus:
    counts = store.route_counts(project_id)
    routes = Routes(**counts, forced_unreadable=store.forced_unreadable(project_id))
    humans = routes.human + routes.audit + routes.forced
    allowed = budget_count(settings.hyper_budget, routes.received)
    budget = Budget(
        share=settings.hyper_budget,
        allowed=allowed,
        used=humans,
        left=max(allowed - humans, 0),
        over=max(humans - allowed, 0),
    )
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
    spend: dict[str, float | None] = {**store.lm_spend(project_id)}
    judged = spend["comparisons_judged"]
    spend["cost_per_1000_comparisons_usd"] = 1000 * spend["cost_usd"] / judged if judged else None
    spend["human_label_usd"] = settings.hyper_human_label_cost
    spend["human_cost_saved_usd"] = routes.ai * settings.hyper_human_label_cost
    accuracy = ai_label_accuracy(routes.ai, agreement(audit_pairs))
    refits = store.refits(project_id)
    project = store.project(project_id)
    return ProjectStatus(
        project=project_id,
        model_version=router.version,
        warnings=campaign_warnings(
            budget, routes, accuracy, settings.hyper_audit_share, router, refits
        ),
        budget=budget,
        routes=routes,
        judge_agreement=agreement([pair for _, pair in labelled]),
        agreement_by_judge={model: agreement(pairs) for model, pairs in sorted(by_judge.items())},
        ai_label_accuracy=accuracy,
        agreement_by_tag=agreement_by_tag(labelled),
        spend=spend,
        batches=batches_status(store, project_id),
        router_versions=router_versions(store.router_versions(project_id), refits, router),
        training=Training(
            every=settings.hyper_refit_every,
            labels_since_last=(project.labels_since_refit or 0) if project else 0,
            last=last_training(refits),
        ),
        quality_target=quality_target(settings, store.certifications(project_id), router),
        top_features=router.feature_weights()[:TOP_FEATURES],
    )
