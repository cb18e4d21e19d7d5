"""Replaying a labelled dataset as a live annotation campaign, to measure online learning.

Comparisons arrive in imports of ``batch_size``. Each import is decided by the
``CampaignPolicy`` the server runs (``core/policy.py``), with the same budget, audit share
and ledger: the decisions, audits and their inclusion probabilities are the ones a project
importing the same comparisons in the same order would get. Human labels come back for
everything routed to humans (the ledger counts them, as the server counts the project's
labels), and, for the ``online`` policy, the router is refitted every ``refit_every`` new
labels by the same ``Refitter`` (``learning.py``) the backend uses.

Human-routed comparisons are a biased sample (the router picked them because they looked
hard). Refits therefore weight each label by the inverse of its probability of having been
labelled: 1 for the router's own picks, and for audits their inclusion probability, so that
audits stand for everything the judge labelled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import t as student

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.learning import Refitter
from hyper_ls_backend.core.policy import CampaignPolicy, Candidate, Decision, LedgerState, Route
from hyper_ls_backend.core.ppm import hybrid_labels
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.strategies import make_strategy, stable_uniform
from hyper_ls_backend.eval.crossval import summarize

POLICIES = ("frozen", "online", "random", "judge-consistency")


@dataclass(frozen=True)
class CampaignSettings:
    budget: float = 0.25
    batch_size: int = 50
    """Comparisons per import."""
    audit_share: float = 0.05
    """Share of the judge-bound comparisons drawn for audits (within the budget)."""
    refit_every: int = 50
    prior_strength: float = 200.0


@dataclass
class CampaignTrace:
    """What a replay did: every decision, in arrival order, and the router versions used."""

    decisions: list[Decision]
    versions: list[str] = field(default_factory=list)
    refits: int = 0
    adopted: int = 0

    @property
    def to_human(self) -> np.ndarray:
        """Routed to humans by the policy (forced ones included), audits excepted."""
        return np.array([d.route is Route.HUMAN and not d.audit for d in self.decisions], bool)

    @property
    def audited(self) -> np.ndarray:
        return np.array([d.audit for d in self.decisions], bool)


def replay(
    prior: Router,
    stream: Sequence[Comparison],
    policy: str,
    settings: CampaignSettings,
    seed: int,
) -> CampaignTrace:
    """Import ``stream`` batch by batch with ``policy`` (one of ``POLICIES``); ``seed`` is
    the audit draw's (the server's is ``policy.AUDIT_SEED``) and the random policy's."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (choose from: {', '.join(POLICIES)})")
    router = prior
    if policy in ("random", "judge-consistency"):
        router = Router(make_strategy(policy, seed=seed), featurizer=prior.featurizer).fit(stream)
    # The random baseline routes at random, doubtful verdicts included.
    campaign = CampaignPolicy(
        settings.budget, settings.audit_share, doubtful_first=policy != "random", seed=seed
    )
    trace, ledger = CampaignTrace([]), LedgerState()
    refitter = Refitter(settings.prior_strength, seed=seed)
    labelled_since_refit = 0
    for start in range(0, len(stream), settings.batch_size):
        batch = stream[start : start + settings.batch_size]
        candidates = [Candidate(c.id, c.without_labels()) for c in batch]
        decisions = campaign.decide(candidates, ledger, router)
        labelled = [(c, d) for c, d in zip(batch, decisions, strict=True) if d.route is Route.HUMAN]
        labels: list[Label] = [c.first_human for c, _ in labelled if c.first_human is not None]
        ledger = ledger.after(decisions, labels)
        trace.decisions.extend(decisions)
        for comparison, decision in labelled:
            refitter.observe([comparison], propensity=decision.inclusion_probability)
        refitter.see(batch)
        trace.versions.append(router.version)
        labelled_since_refit += len(labelled)
        if policy == "online" and labelled_since_refit >= settings.refit_every:
            labelled_since_refit = 0
            outcome = refitter.refit(prior, current=router)
            trace.refits += 1
            if outcome.adopted:
                trace.adopted += 1
                router = outcome.router
    return trace


def campaign_metrics(
    stream: Sequence[Comparison], trace: CampaignTrace, upto: int | None = None
) -> dict[str, float]:
    """Judge-error capture (x the human share) and final label accuracy of a replay, over
    its first ``upto`` comparisons (default: all)."""
    stream = stream[:upto]
    labelled = (trace.to_human | trace.audited)[: len(stream)]
    wrong = np.array(
        [c.judge_label is not None and c.first_human not in (None, c.judge_label) for c in stream]
    )
    share = float(labelled.mean())
    caught = float((wrong & labelled).sum() / max(wrong.sum(), 1))
    labels = hybrid_labels(stream, labelled)
    correct = [label == c.reference_label for label, c in zip(labels, stream, strict=True)]
    return {
        "human_share": share,
        "capture": caught,
        "capture_ratio": caught / share if share else 0.0,
        "label_accuracy": float(np.mean(correct)),
    }


SPLITS = ("groups", "category", "turn", "models")
WEAK_SHARE = 1 / 3
"""``models`` split: the weakest third of the models (by the prior side's human win rates)."""


def model_strength(comparisons: Sequence[Comparison]) -> dict[str, float]:
    """Each model's share of human votes won (a tie counts half) over ``comparisons``, which
    need ``meta.model_a`` and ``meta.model_b``."""
    won: dict[str, float] = {}
    played: dict[str, int] = {}
    for c in comparisons:
        a, b = c.meta.get("model_a"), c.meta.get("model_b")
        if not a or not b:
            raise ValueError(f"{c.id}: the models split needs meta.model_a and meta.model_b")
        for vote in c.human:
            share = {"A": 1.0, "B": 0.0}.get(str(vote), 0.5)
            won[a] = won.get(a, 0.0) + share
            won[b] = won.get(b, 0.0) + 1.0 - share
            played[a] = played.get(a, 0) + 1
            played[b] = played.get(b, 0) + 1
    return {model: won[model] / played[model] for model in sorted(played)}


def split_for_replay(
    comparisons: Sequence[Comparison], split: str, seed: int
) -> tuple[list[Comparison], list[Comparison]]:
    """(prior data, campaign stream); the stream arrives in a seeded random order.

    - ``groups``: half the groups each.
    - ``category``: half the categories each (the campaign's topics are new to the prior).
    - ``turn``: half the groups each; the prior gets their first-turn comparisons, the
      campaign the second-turn comparisons of the other groups (multi-turn judging).
    - ``models``: half the groups each; the prior gets its groups' comparisons involving one
      of the weakest third of the models, the campaign its groups' comparisons between the
      other models (close answers). Strength = human win rate on the prior side's groups,
      so the campaign's labels never decide which comparisons it holds.

    Whatever the split, no group is on both sides."""
    rng = np.random.default_rng(seed)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (choose from: {', '.join(SPLITS)})")
    by_group = split in ("groups", "turn", "models")
    if by_group:
        key = [c.group for c in comparisons]
    else:
        key = [str(c.all_tags.get("category", "other")) for c in comparisons]
    values = sorted(set(key))
    if len(values) < 2:
        raise ValueError(f"need at least 2 distinct {split} values to split the data")
    prior_side = set(rng.permutation(values)[: len(values) // 2].tolist())
    prior = [c for c, k in zip(comparisons, key, strict=True) if k in prior_side]
    rest = [c for c, k in zip(comparisons, key, strict=True) if k not in prior_side]
    if split == "turn":
        turns = {str(c.meta.get("turn")) for c in comparisons}
        if not {"1", "2"} <= turns:
            raise ValueError("the turn split needs meta.turn 1 and 2")
        prior = [c for c in prior if str(c.meta.get("turn")) == "1"]
        rest = [c for c in rest if str(c.meta.get("turn")) == "2"]
    elif split == "models":
        strength = model_strength(prior)
        ranked = sorted(strength, key=lambda model: (strength[model], model))
        weak = set(ranked[: max(1, round(WEAK_SHARE * len(ranked)))])
        model_strength(rest)  # the same requirement on the campaign side

        def involves_weak(c: Comparison) -> bool:
            return bool({c.meta["model_a"], c.meta["model_b"]} & weak)

        prior = [c for c in prior if involves_weak(c)]
        rest = [c for c in rest if not involves_weak(c)]
    return prior, [rest[i] for i in rng.permutation(len(rest))]


CAMPAIGN_JUDGES = ("real", "topic-guess")
GUESSED_TOPICS = 2
GUESS_DRAW_OFFSET = 1_000_003


def topic_guessing_judge(
    stream: Sequence[Comparison], seed: int, n_topics: int = GUESSED_TOPICS
) -> list[Comparison]:
    """A synthetic stress test, not real data: the campaign's judge cannot assess
    ``n_topics`` seed-chosen categories and guesses there (A or B by a seeded coin per
    comparison), reported as order-consistent, as a confident judge would be. Elsewhere its
    verdicts are the real ones; human labels are never touched. The prior, fitted on the
    real judge, does not know where this judge is blind: a campaign's labels can tell."""
    categories = sorted({str(c.all_tags.get("category", "other")) for c in stream})
    rng = np.random.default_rng(seed)
    blind = set(rng.permutation(categories)[:n_topics].tolist())
    # A draw of its own: the random and judge-consistency policies draw stable_uniform(seed).
    coins = stable_uniform([c.id for c in stream], seed + GUESS_DRAW_OFFSET)
    shifted = []
    for comparison, coin in zip(stream, coins, strict=True):
        category = str(comparison.all_tags.get("category", "other"))
        if category in blind and comparison.judge is not None:
            verdict = comparison.judge.model_copy(
                update={
                    "label": Label.A if coin < 0.5 else Label.B,
                    "consistent": True,
                    "model": "topic-guess",
                }
            )
            comparison = comparison.with_judge(verdict)
        shifted.append(comparison)
    return shifted


def paired_difference(values: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Per-seed difference to a reference policy: mean, std and a 95% t-interval."""
    diff = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    summary = summarize(diff)
    half = (
        float(student.ppf(0.975, len(diff) - 1) * summary["std"] / np.sqrt(len(diff)))
        if len(diff) > 1
        else float("nan")
    )
    return summary | {"ci95": [summary["mean"] - half, summary["mean"] + half]}


def simulate_online(
    comparisons: Sequence[Comparison],
    settings: CampaignSettings,
    seeds: int = 5,
    split: str = "groups",
    strategy: str = "judge-error",
    campaign_judge: str = "real",
    prior: Router | None = None,
    draws: Callable[[int], Sequence[Comparison]] | None = None,
) -> dict[str, Any]:
    """Replay a campaign per seed with every policy; a JSON-ready report.

    ``campaign_judge="topic-guess"`` replaces the stream's judge by
    ``topic_guessing_judge`` (a synthetic stress test; the prior keeps the real judge).

    With a given ``prior`` nothing is split: every seed replays all of ``comparisons`` (or
    ``draws(seed)``, another dataset per seed) as one campaign, in a seeded random order,
    against that prior."""
    if campaign_judge not in CAMPAIGN_JUDGES:
        raise ValueError(
            f"unknown campaign judge {campaign_judge!r} (choose from: {', '.join(CAMPAIGN_JUDGES)})"
        )
    per_policy: dict[str, list[dict[str, float]]] = {p: [] for p in POLICIES}
    curves: dict[str, list[list[float]]] = {p: [] for p in POLICIES}
    refits: dict[str, list[int]] = {p: [] for p in POLICIES}
    sizes = []
    for seed in range(seeds):
        if prior is None:
            prior_data, stream = split_for_replay(comparisons, split, seed)
            seed_prior = Router(make_strategy(strategy, seed=seed)).fit(prior_data)
        else:
            data = list(draws(seed) if draws else comparisons)
            stream = [data[i] for i in np.random.default_rng(seed).permutation(len(data))]
            seed_prior = prior
        sizes.append(len(stream))
        if campaign_judge == "topic-guess":
            stream = topic_guessing_judge(stream, seed)
        checkpoints = range(settings.batch_size, len(stream) + 1, settings.batch_size)
        for policy in POLICIES:
            trace = replay(seed_prior, stream, policy, settings, seed)
            per_policy[policy].append(campaign_metrics(stream, trace))
            curves[policy].append(
                [campaign_metrics(stream, trace, k)["capture_ratio"] for k in checkpoints]
            )
            refits[policy].append(trace.adopted)
    return {
        "n_comparisons": len(comparisons),
        "split": split if prior is None else "none",
        "campaign_sizes": sizes,
        "prior": None if prior is None else prior.version,
        "seeds": seeds,
        "settings": asdict(settings),
        "strategy": strategy if prior is None else prior.strategy.name,
        "campaign_judge": campaign_judge,
        "results": [
            {
                "policy": policy,
                **{
                    key: summarize([m[key] for m in per_policy[policy]])
                    for key in ("human_share", "capture_ratio", "label_accuracy")
                },
                "adopted_refits": summarize(refits[policy]),
                "minus_frozen": {
                    key: paired_difference(
                        [m[key] for m in per_policy[policy]],
                        [m[key] for m in per_policy["frozen"]],
                    )
                    for key in ("capture_ratio", "label_accuracy")
                },
                "capture_curve": np.mean(
                    [c[: min(map(len, curves[policy]))] for c in curves[policy]], axis=0
                ).tolist(),
            }
            for policy in POLICIES
        ],
        "batch_size": settings.batch_size,
    }
