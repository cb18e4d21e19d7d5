"""The campaign policy: where each task of a campaign goes under a human budget, and why.

One object decides for the server (each Label Studio import) and for the offline replay
(``simulate --online``), so what the replay measures is what a project gets. It sees a
batch of candidates (the tasks of one import), the ledger before them and the router that
scores them, and returns one ``Decision`` per candidate. Two rules, by batch size:

- **ranked** (``len(batch) >= min_batch``, the tasks of one import decided together once all
  are judged): the batch gets exactly the allowance
  ``floor(budget x (n_decided + len(batch))) - n_human`` (never negative), whatever order
  its judge calls finished in. Tasks that cannot be routed (unreadable, judge failed) take
  it first and always go to humans; then doubtful verdicts (order-inconsistent or of
  confidence 0), so none is pre-filled while the budget can take it; then the highest
  scores. Audits come out of the same allowance (below).
- **streaming** (smaller batches, decided one task at a time as they are judged): a task
  goes to humans when it is doubtful or its score clears the ``1 - budget`` quantile of the
  scores seen so far (seeded with the router's reference scores) and the ledger has room,
  ``n_human <= floor(budget x n_decided)`` at every step. Streaming may leave part of the
  budget unspent (a trickle of low scores); the next ranked batch's allowance takes it up,
  so after every ranked batch the campaign has spent exactly its budget.

Below ``MIN_RANKED_BATCH`` tasks an import's own top share says little about where the
campaign's top share lies, and the streaming threshold, which compares each score with
every score seen so far, does better.

**Audits.** Of the tasks the judge would label, each is drawn with probability
``audit_share`` by a fixed draw per task (``stable_uniform`` on its id: a replay or a
restart draws the same), and goes to humans instead, unlabelled, to measure the judge
without bias. In a ranked batch audits take the allowance's last router picks (never a
doubtful verdict's place); when more are drawn than the allowance leaves, the smallest
draws are kept, and each audit's inclusion probability is then
``E[min(Binomial(m, audit_share), cap)] / m`` for a pool of ``m`` judge-bound tasks and
``cap`` places: exact, whatever the pool. In streaming, a task is audited only while the
ledger has room, with probability ``audit_share``.

**Settling before the import is judged.** A big import's judge calls take a while.
``settle`` decides those of its judged tasks whose decision the ranked rule makes whatever
its unjudged tasks turn out to be. To the judge: a task neither forced, doubtful nor drawn
for an audit, with at least as many such known tasks ranking above it as the allowance
could leave places for scores, less the audits sure to take some of them (the drawn tasks
ranking below all those places): it is never among the highest. To humans: a forced task
(always), and a task ranking so high that the allowance reaches it even if every unjudged
task takes a place above it (forced, a doubtful verdict ahead of it, a higher score, or an
audit; the drawn tasks known to rank below it may take audits' places too). Their
decisions are made and written back while the rest is judged; the import's final decision
ranks them with the rest as if undecided (``decide``'s ``settled``) and changes nothing of
what it would have decided without them. If that ranking would now decide a settled task
otherwise (the ledger moved meanwhile, a certificate came), the settled decisions stand,
and the rest is ranked alone on the ledger as it stands: the budget stays exact. The rule
is the plain ranked one only: under a certificate, while calibrating, or with the PPM
strategy's selection nothing settles.

**What is pre-filled.** An AI decision carries the judges' label (``JudgeSignals.ai_label``).
When that is a tie and the project's humans almost never choose tie (under ``RARE_TIE`` of
at least ``MIN_TIE_LABELS`` human labels), the side the judges leaned to is pre-filled
instead, and the reasons say so; a doubtful verdict pre-filled because the budget is spent
says that too. A project whose control has no tie (``can_prefill_tie=False``: Label
Studio's ``<Pairwise>``, a two-choice scale) cannot hold a judge's tie: such a verdict goes
to humans as a doubtful one does, and once the budget is spent it is left unlabelled (an AI
decision with no label) with a reason saying so.

**A certified threshold** (``certificate``, from ``core/guarantee.py``) replaces the budget's
ranking: judge-bound tasks scoring at most the threshold go to the judge (or are audited),
the others to humans, and ``budget`` only caps the humans. When the cap binds (the
threshold would send more to humans than it allows) the guarantee cannot be given: the
batch is decided by the budget as above, each decision saying so, none marked certified.
A project with a quality target audits for calibration (``calibrating``): its audits are
drawn first and from every routable task, whatever its score, so the audited tasks are a
uniform sample (with known inclusion probabilities) of all that the judge could label, and
certify any threshold; an audit that would have gone to humans anyway costs no place.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import binom

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.guarantee import Certificate
from hyper_ls_backend.core.signals import JudgeSignals, judge_signals
from hyper_ls_backend.core.strategies import PPMStrategy, stable_uniform

if TYPE_CHECKING:
    from hyper_ls_backend.core.router import Router

MIN_RANKED_BATCH = 20
"""Imports of fewer tasks are decided one at a time by the streaming rule."""
AUDIT_SEED = 7
SCORE_WINDOW = 1_000
"""Recent scores the streaming threshold reads besides the router's reference scores."""
RARE_TIE = 0.05
MIN_TIE_LABELS = 20

JUDGE_FAILED_REASON = "judge failed: no usable verdict, a human must label it"
AUDIT_REASON = "audit: a random sample of what the judge labels, to measure the judge"
DOUBTFUL_PICK_REASON = "doubtful verdict, humans first: the judge's answer {why}"
DOUBTFUL_AI_REASON = "budget spent: the judge's answer is doubtful ({why})"
NO_TIE_REASON = (
    "left unlabelled: the judges say tie, this project's control has no tie, and the "
    "budget is spent"
)
CERTIFIED_REASON = (
    "certified: scores at most {threshold:.3f} (this one {score:.3f}), where {promise}"
)
ABOVE_THRESHOLD_REASON = (
    "above the certified threshold ({score:.3f} > {threshold:.3f}): no guarantee for the judge here"
)
NOT_YET_CERTIFIED_REASON = (
    "not yet certified: routed by the budget while audits calibrate the quality target"
)
CAP_BINDS_REASON = (
    "not certified: the certified threshold sends {wanted} of these tasks to humans, the "
    "budget allows {allowance}"
)
SETTLED_REASON = (
    "decided before the rest of its import was judged: enough of the import ranks above it "
    "that the budget passes it by"
)
SETTLED_HUMAN_REASON = (
    "decided before the rest of its import was judged: it ranks high enough in the import "
    "that the budget reaches it whatever the rest is"
)
TIE_LEAN_REASON = (
    "pre-filled {side}, the side the judge leaned to, not its tie: this project's humans "
    "chose tie in {ties} of {labels} labels"
)


class Route(StrEnum):
    HUMAN = "human"
    AI = "ai"


def budget_count(share: float, n: int) -> int:
    """floor(share x n), immune to float noise (0.29 x 100 is 28.999999999999996)."""
    return math.floor(round(share * n, 9))


@dataclass(frozen=True)
class Candidate:
    """A task to decide: a comparison (judged, when a judge is configured), or a
    ``problem`` saying why it cannot be routed (unreadable, no judge, judge failed), which
    sends it to humans with that reason."""

    id: str
    comparison: Comparison | None = None
    problem: str | None = None

    def __post_init__(self) -> None:
        if self.comparison is None and self.problem is None:
            raise ValueError(f"candidate {self.id}: a comparison or a problem is needed")


@dataclass(frozen=True)
class Decision:
    """Where one task goes, how strongly, and why."""

    id: str
    route: Route
    score: float
    reasons: list[str]
    forced: bool = False
    """True when the route was not the router's choice (cannot be routed, fixed strategy)."""
    audit: bool = False
    """Sent to humans at random from what the judge would have labelled, to measure it."""
    inclusion_probability: float = 1.0
    """An audit's probability of having been drawn; 1.0 for every other decision."""
    judge_label: Label | None = None
    """The judges' label: what an AI decision pre-fills."""
    judge_confidence: float | None = None
    model_version: str = ""
    certified: bool = False
    """Sent to the judge under a certified threshold: covered by its guarantee."""
    settled: bool = False
    """Decided by ``CampaignPolicy.settle`` before the rest of its ranked batch was judged."""

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route.value,
            "score": round(self.score, 6),
            "reasons": self.reasons,
        }


@dataclass(frozen=True)
class LedgerState:
    """How a campaign's budget stands before a batch."""

    n_decided: int = 0
    n_human: int = 0
    recent_scores: tuple[float, ...] = ()
    """The last ``SCORE_WINDOW`` decisions' scores, oldest first."""
    human_labels: int = 0
    human_ties: int = 0
    """Human labels the campaign has, and how many of them are ties."""

    def after(self, decisions: Sequence[Decision], labels: Sequence[Label] = ()) -> LedgerState:
        """The ledger once ``decisions`` are made and ``labels`` (human labels) came in."""
        scores = (*self.recent_scores, *(d.score for d in decisions))[-SCORE_WINDOW:]
        decided = self.n_decided + len(decisions)
        return LedgerState(
            n_decided=decided,
            n_human=self.n_human + sum(d.route is Route.HUMAN for d in decisions),
            recent_scores=scores,
            human_labels=self.human_labels + len(labels),
            human_ties=self.human_ties + sum(label is Label.TIE for label in labels),
        )

    @property
    def ties_rare(self) -> bool:
        return self.human_labels >= MIN_TIE_LABELS and self.human_ties < RARE_TIE * (
            self.human_labels
        )


@dataclass(frozen=True)
class Scored:
    """A candidate with what the policy reads of it: no comparison, so a streamed batch can
    keep it on disk while the rest of the batch is read."""

    id: str
    score: float
    reasons: list[str]
    signals: JudgeSignals | None
    problem: str | None = None
    """Why the task cannot be routed (see ``Candidate``)."""
    features: np.ndarray | None = None
    """The comparison's feature row (for the PPM strategy's selection)."""
    can_prefill_tie: bool = True

    @property
    def forced(self) -> bool:
        return self.problem is not None or (self.signals is not None and self.signals.failed)

    @property
    def doubtful(self) -> bool:
        """The judges' answer is not to be trusted, or cannot be pre-filled (a tie on a
        control without one)."""
        return self.signals is not None and (self.signals.doubtful or self.unfillable_tie)

    @property
    def unfillable_tie(self) -> bool:
        return (
            not self.can_prefill_tie
            and self.signals is not None
            and self.signals.ai_label is Label.TIE
        )


@dataclass(frozen=True)
class BatchFacts:
    """What the ranked rule reads of a batch, one entry per task, in any order: enough to
    decide it without holding its comparisons (``hyper-ls route`` keeps only these while it
    streams a file). ``ids`` and ``features`` look up the given rows' ids and feature rows,
    read only where the rule needs them (ties at the budget's edge, audit draws, the PPM
    strategy's selection)."""

    scores: np.ndarray
    forced: np.ndarray
    doubtful: np.ndarray
    unfillable_tie: np.ndarray
    ids: Callable[[np.ndarray], Sequence[str]]
    features: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def of(cls, scored: Sequence[Scored]) -> BatchFacts:
        def flags(name: str) -> np.ndarray:
            return np.array([getattr(s, name) for s in scored], dtype=bool)

        return cls(
            np.array([s.score for s in scored], dtype=float),
            flags("forced"),
            flags("doubtful"),
            flags("unfillable_tie"),
            lambda rows: [scored[i].id for i in rows],
            lambda rows: np.stack([scored[i].features for i in rows]),
        )


class Outcome(IntEnum):
    """What a ranked batch does with one task."""

    AI = 0
    HUMAN = 1
    AUDIT = 2
    CERTIFIED = 3
    """To the judge, covered by the certificate."""


@dataclass(frozen=True)
class RankedPlan:
    """A ranked batch decided: an ``Outcome`` per task (an int8 array, in ``BatchFacts``
    order) and what its decisions share."""

    outcomes: np.ndarray
    audit_probability: float = 0.0
    cap_binds: str | None = None
    """The reason heading every decision when a certificate's cap binds."""


@dataclass(frozen=True)
class CampaignPolicy:
    """Decides a campaign's batches at a human budget (see the module docstring).

    Parameters
    ----------
    budget:
        Share of the campaign's tasks humans may label (audits and forced tasks included).
    audit_share:
        Share of the judge-bound tasks drawn for audits, within the budget.
    min_batch:
        Batches at least this large are ranked; smaller ones are streamed.
    doubtful_first:
        Doubtful verdicts go to humans before any score (off: the router's ranking alone).
    can_prefill_tie:
        The project's control can hold a tie (off for ``<Pairwise>`` and two-choice scales).
    certificate:
        A certified threshold to route by; ``budget`` then caps the humans.
    calibrating:
        Audits are the calibration sample of a quality target: drawn first, from every
        routable task whatever its score (a uniform sample of what could be AI-labelled),
        not from the judge-bound tasks alone.
    seed:
        Seed of the per-task audit draw.
    """

    budget: float = 0.25
    audit_share: float = 0.05
    min_batch: int = MIN_RANKED_BATCH
    doubtful_first: bool = True
    can_prefill_tie: bool = True
    certificate: Certificate | None = None
    calibrating: bool = False
    seed: int = AUDIT_SEED

    def __post_init__(self) -> None:
        for name in ("budget", "audit_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a share between 0 and 1")

    def decide(
        self,
        batch: Sequence[Candidate],
        ledger: LedgerState,
        router: Router,
        progress: Callable[[int], None] | None = None,
        n_jobs: int = 1,
        settled: Sequence[tuple[Candidate, Route]] = (),
    ) -> list[Decision]:
        """One decision per candidate, in the batch's order. ``settled``: the same ranked
        batch's tasks ``settle`` decided already, with where each went (counted in
        ``ledger``): ranked with it as if undecided, given no decision (see the module
        docstring). ``progress`` and ``n_jobs`` are passed to the featurizer."""
        if not batch:
            return []
        share, fixed = self.share(router), router.strategy.fixed_human_share
        if len(batch) + len(settled) >= self.min_batch:
            decisions = self._ranked(batch, ledger, router, share, settled, progress, n_jobs)
        else:
            # Each scored alone, as the server scores a task decided on its own (batched
            # float arithmetic differs in the last bits).
            scored = [self.score([c], router, progress, n_jobs)[0] for c in batch]
            decisions = self._streamed(scored, ledger, router, share)
        return [
            replace(d, forced=d.forced or fixed is not None, model_version=router.version)
            for d in decisions
        ]

    def _ranked(
        self,
        batch: Sequence[Candidate],
        ledger: LedgerState,
        router: Router,
        share: float,
        settled: Sequence[tuple[Candidate, Route]],
        progress: Callable[[int], None] | None,
        n_jobs: int,
    ) -> list[Decision]:
        """The ranked rule on the batch and its settled tasks together, as if none were
        decided; if that would change a settled decision (the ledger moved since, or a
        certificate came), the undecided tasks ranked alone on the ledger as it stands."""
        # Scored and ranked in id order, so the batch's order (its judge calls' finishing
        # order) changes nothing, not even the last bits of a score.
        whole = [*batch, *(candidate for candidate, _ in settled)]
        order = sorted(range(len(whole)), key=lambda i: whole[i].id)
        scored = self.score([whole[i] for i in order], router, progress, n_jobs)
        before = _before_settled(ledger, settled)
        plan = self.plan_ranked(BatchFacts.of(scored), before, router, share)
        row_of = {i: row for row, i in enumerate(order)}
        kept = all(
            plan.outcomes[row_of[len(batch) + k]] == SETTLED_OUTCOME[route]
            for k, (_, route) in enumerate(settled)
        )
        if kept:
            return [
                self.ranked_decision(plan, row_of[i], scored[row_of[i]], before)
                for i in range(len(batch))
            ]
        alone = [scored[row_of[i]] for i in range(len(batch))]
        plan = self.plan_ranked(BatchFacts.of(alone), ledger, router, share)
        return [self.ranked_decision(plan, i, s, ledger) for i, s in enumerate(alone)]

    def share(self, router: Router) -> float:
        """The share of a batch humans may take: the budget, or a fixed strategy's own."""
        fixed = router.strategy.fixed_human_share
        return self.budget if fixed is None else fixed

    # -- the two rules ----------------------------------------------------------------------

    def settle(
        self,
        judged: Sequence[Candidate],
        n_batch: int,
        ledger: LedgerState,
        router: Router,
        settled: Sequence[tuple[Candidate, Route]] = (),
    ) -> list[Decision | None]:
        """For each judged candidate of a ranked batch whose other tasks are not all judged
        yet, its decision if the ranked rule is sure of it whatever they turn out to be,
        else None (see the module docstring). ``n_batch``: the batch's undecided tasks,
        judged or not; ``ledger``: as it stands, the tasks ``settled`` before counted."""
        if (
            not judged
            or n_batch + len(settled) < self.min_batch
            or self.certificate is not None
            or self.calibrating
            or isinstance(router.strategy, PPMStrategy)
            or router.strategy.fixed_human_share is not None
        ):
            return [None] * len(judged)
        # The batch as the final decision sees it: every task undecided (``decide``).
        known = self.score([*judged, *(candidate for candidate, _ in settled)], router)
        before = _before_settled(ledger, settled)
        size = before.n_decided + n_batch + len(settled)
        allowance = max(0, budget_count(self.share(router), size) - before.n_human)
        unjudged = n_batch - len(judged)
        forced = np.array([s.forced for s in known], dtype=bool)
        doubtful = np.array([s.doubtful for s in known], dtype=bool) & ~forced
        if not self.doubtful_first:
            doubtful[:] = False
        drawn = self._draws([s.id for s in known]) < self.audit_share
        ranks = _ranks(known, doubtful) + _ranks(known, ~forced & ~doubtful)
        undrawn = _ranks(known, ~forced & ~doubtful & ~drawn)
        drawn_below = _below(known, ~forced & ~doubtful & drawn)
        # the most places the scores can get (unjudged tasks forced or doubtful leave fewer),
        # less the audits sure to take some: the drawn tasks ranking below them all
        places = max(0, allowance - int(forced.sum()) - int(doubtful.sum()))
        scored_places = places - int((~forced & ~doubtful & drawn & (ranks >= places)).sum())
        decisions: list[Decision | None] = []
        for i, s in enumerate(known[: len(judged)]):
            if forced[i]:
                human = True  # always
            elif doubtful[i]:  # every unjudged task may be forced or a doubtful above it
                human = ranks[i] + unjudged < allowance - forced.sum()
            else:  # ... or a score above it, or an audit (so may the drawn below it)
                human = ranks[i] + unjudged < places - drawn_below[i]
            if human:
                reasons = [] if forced[i] else [SETTLED_HUMAN_REASON]
                decision = self._human(s)
            elif not (doubtful[i] or drawn[i]) and undrawn[i] >= scored_places:  # not picked
                reasons, decision = [SETTLED_REASON], self._ai(s, ledger)
            else:
                decisions.append(None)
                continue
            reasons = [*decision.reasons, *reasons]
            decisions.append(
                replace(decision, reasons=reasons, settled=True, model_version=router.version)
            )
        return decisions

    def plan_ranked(
        self, facts: BatchFacts, ledger: LedgerState, router: Router, share: float
    ) -> RankedPlan:
        """The ranked rule on a batch's facts (see the module docstring); ``ranked_decision``
        turns each task's outcome into its decision."""
        n = len(facts.scores)
        allowance = max(0, budget_count(share, ledger.n_decided + n) - ledger.n_human)
        forced = facts.forced
        if self.certificate is not None:
            above = ~forced & ((facts.scores > self.certificate.threshold) | facts.unfillable_tie)
            wanted = int(forced.sum() + above.sum())
            if wanted <= allowance:
                return self._plan_certified(facts, forced, above, allowance - wanted)
            uncertified = replace(self, certificate=None)
            plan = uncertified.plan_ranked(facts, ledger, router, share)
            binds = CAP_BINDS_REASON.format(wanted=wanted, allowance=allowance)
            return replace(plan, cap_binds=binds)
        outcomes = np.where(forced, Outcome.HUMAN, Outcome.AI).astype(np.int8)
        free = max(0, allowance - int(forced.sum()))
        rest = ~forced
        probability = 0.0
        if self.calibrating:  # audits first, from every routable task: a uniform sample
            audits, probability = self._draw_audits(facts, np.flatnonzero(rest), free)
            free -= len(audits)
            outcomes[audits] = Outcome.AUDIT
            rest[audits] = False
        doubtful = rest & facts.doubtful if self.doubtful_first else np.zeros(n, dtype=bool)
        others = np.flatnonzero(rest & ~doubtful)
        pickable = others
        doubtful_picks = _top(router, facts, np.flatnonzero(doubtful), free)
        outcomes[doubtful_picks] = Outcome.HUMAN
        places = free - len(doubtful_picks)
        if not self.calibrating and self.audit_share > 0:
            # audits from what the judge would label, last places
            pool = np.setdiff1d(others, _top(router, facts, pickable, places))
            audits, probability = self._draw_audits(facts, pool, places)
            places -= len(audits)
            outcomes[audits] = Outcome.AUDIT
            pickable = np.setdiff1d(pickable, audits)
        outcomes[_top(router, facts, pickable, places)] = Outcome.HUMAN
        return RankedPlan(outcomes, probability)

    def ranked_decision(
        self, plan: RankedPlan, row: int, s: Scored, ledger: LedgerState
    ) -> Decision:
        """The decision for task ``row`` of a planned batch, ``s`` being what was scored."""
        policy = self if plan.cap_binds is None else replace(self, certificate=None)
        outcome = Outcome(int(plan.outcomes[row]))
        if outcome is Outcome.AUDIT:
            decision = policy._audit(s, plan.audit_probability)
        elif outcome is Outcome.HUMAN:
            decision = policy._human(s)
        elif outcome is Outcome.CERTIFIED:
            decision = policy._ai_certified(s)
        else:
            decision = policy._ai(s, ledger)
        if plan.cap_binds is None:
            return decision
        # a certificate exists: "not yet certified" would mislead
        kept = (r for r in decision.reasons if r != NOT_YET_CERTIFIED_REASON)
        return replace(decision, reasons=[plan.cap_binds, *kept])

    def _plan_certified(
        self, facts: BatchFacts, forced: np.ndarray, above: np.ndarray, places: int
    ) -> RankedPlan:
        """The ranked batch under a certificate whose cap has room: ``above`` the threshold
        to humans, audits within ``places``, the rest to the judge. Calibrating, audits are
        drawn from every routable task (one above the threshold goes to humans anyway and
        costs no place); else from what the judge would label."""
        pool = np.flatnonzero(~forced & ~above)
        if self.calibrating:
            pool = np.flatnonzero(~forced)
            places = self._affordable_audits(facts, pool, above, places)
        audits, probability = self._draw_audits(facts, pool, places)
        outcomes = np.where(forced | above, Outcome.HUMAN, Outcome.CERTIFIED).astype(np.int8)
        outcomes[audits] = Outcome.AUDIT
        return RankedPlan(outcomes, probability)

    def _affordable_audits(
        self, facts: BatchFacts, pool: np.ndarray, free: np.ndarray, places: int
    ) -> int:
        """How many of the smallest audit draws in ``pool`` fit in ``places`` when those
        ``free`` (a mask) cost nothing (they go to humans anyway)."""
        draws = self._draws(facts.ids(pool))
        drawn = sorted((d, i) for d, i in zip(draws, pool, strict=True) if d < self.audit_share)
        taken = cost = 0
        for _, i in drawn:
            cost += not free[i]
            if cost > places:
                break
            taken += 1
        return taken

    def _above(self, s: Scored) -> bool:
        """Outside what the certificate covers: scoring over its threshold, or a tie the
        project's control cannot hold."""
        return s.score > self.certificate.threshold or s.unfillable_tie

    def _streamed(
        self, scored: list[Scored], ledger: LedgerState, router: Router, share: float
    ) -> list[Decision]:
        fixed = router.strategy.fixed_human_share is not None
        draws = self._draws([s.id for s in scored])
        decisions = []
        for s, draw in zip(scored, draws, strict=True):
            room = budget_count(share, ledger.n_decided + 1) - ledger.n_human
            threshold = np.quantile(
                np.concatenate([router.reference_scores_, ledger.recent_scores]), 1.0 - share
            )
            if self.certificate is not None:
                wanted = self._above(s)
            else:
                wanted = fixed or (self.doubtful_first and s.doubtful) or s.score >= threshold
            audited = room > 0 and draw < self.audit_share
            if s.forced:
                decision = self._human(s)
            elif self.calibrating and audited:  # whatever its score: a uniform sample
                decision = self._audit(s, self.audit_share)
            elif wanted and room > 0:
                decision = self._human(s)
            elif audited:
                decision = self._audit(s, self.audit_share)
            elif self.certificate is not None and not wanted:
                decision = self._ai_certified(s)
            elif self.certificate is not None:
                binds = CAP_BINDS_REASON.format(wanted=1, allowance=0)
                decision = replace(self._ai(s, ledger), reasons=[binds, *s.reasons])
            else:
                decision = self._ai(s, ledger)
            decisions.append(decision)
            ledger = ledger.after([decision])
        return decisions

    # -- parts --------------------------------------------------------------------------------

    def score(
        self,
        batch: Sequence[Candidate],
        router: Router,
        progress: Callable[[int], None] | None = None,
        n_jobs: int = 1,
        explain: bool = True,
    ) -> list[Scored]:
        """What the policy reads of each candidate; ``explain=False`` leaves the reasons
        empty (``Router.explain_signals`` gives them later, from the features and signals)."""
        judged = [i for i, c in enumerate(batch) if c.comparison is not None]
        scores, reasons = np.zeros(len(batch)), [[] for _ in batch]
        rows: list[np.ndarray | None] = [None] * len(batch)
        signals = [judge_signals(c.comparison) if c.comparison else None for c in batch]
        if judged:
            comparisons = [batch[i].comparison for i in judged]
            found, features = router.score(comparisons, n_jobs, progress)
            explained = (
                router.explain_signals(features, [signals[i] for i in judged])
                if explain
                else [[] for _ in judged]
            )
            for k, i in enumerate(judged):
                scores[i], reasons[i], rows[i] = float(found[k]), explained[k], features[k]
        return [
            Scored(
                candidate.id,
                float(scores[i]),
                reasons[i],
                signals[i],
                candidate.problem,
                rows[i],
                self.can_prefill_tie,
            )
            for i, candidate in enumerate(batch)
        ]

    def _draws(self, ids: Sequence[str]) -> np.ndarray:
        return stable_uniform([f"audit:{i}" for i in ids], self.seed)

    def _draw_audits(
        self, facts: BatchFacts, pool: np.ndarray, places: int
    ) -> tuple[np.ndarray, float]:
        """Audits among ``pool`` (judge-bound rows), at most ``places``: the smallest of the
        draws under ``audit_share``; and their common inclusion probability."""
        if not len(pool) or places <= 0 or self.audit_share == 0:
            return np.empty(0, dtype=np.intp), 0.0
        draws = self._draws(facts.ids(pool))
        drawn = sorted((d, i) for d, i in zip(draws, pool, strict=True) if d < self.audit_share)
        m = len(pool)
        expected = sum(binom.sf(j - 1, m, self.audit_share) for j in range(1, places + 1))
        return np.array([i for _, i in drawn[:places]], dtype=np.intp), float(expected / m)

    def _human(self, s: Scored) -> Decision:
        if s.forced:
            reasons = [s.problem or JUDGE_FAILED_REASON]
        elif self.certificate is not None and s.unfillable_tie:
            reasons = [DOUBTFUL_PICK_REASON.format(why=_doubt(s)), *s.reasons]
        elif self.certificate is not None:
            above = ABOVE_THRESHOLD_REASON.format(
                score=s.score, threshold=self.certificate.threshold
            )
            reasons = [above, *s.reasons]
        elif self.doubtful_first and s.doubtful:
            reasons = [DOUBTFUL_PICK_REASON.format(why=_doubt(s)), *s.reasons]
        else:
            reasons = s.reasons
        return self._decision(s, Route.HUMAN, reasons, forced=s.forced)

    def _audit(self, s: Scored, probability: float) -> Decision:
        return replace(
            self._decision(s, Route.HUMAN, [AUDIT_REASON, *s.reasons]),
            audit=True,
            inclusion_probability=probability,
        )

    def _ai(self, s: Scored, ledger: LedgerState) -> Decision:
        notes, label = [], s.signals.ai_label if s.signals else None
        if s.unfillable_tie:
            return replace(
                self._decision(s, Route.AI, [NO_TIE_REASON, *s.reasons]), judge_label=None
            )
        if self.calibrating and self.certificate is None:
            notes.append(NOT_YET_CERTIFIED_REASON)
        if self.doubtful_first and s.doubtful:
            notes.append(DOUBTFUL_AI_REASON.format(why=_doubt(s)))
        if label is Label.TIE and ledger.ties_rare and s.signals.lean is not None:
            label = s.signals.lean
            notes.append(
                TIE_LEAN_REASON.format(
                    side=label.value, ties=ledger.human_ties, labels=ledger.human_labels
                )
            )
        return replace(self._decision(s, Route.AI, [*notes, *s.reasons]), judge_label=label)

    def _ai_certified(self, s: Scored) -> Decision:
        """A judge-bound task the certificate covers: its label, as the guarantee was
        measured on (the lean rule does not apply)."""
        certified = CERTIFIED_REASON.format(
            score=s.score,
            threshold=self.certificate.threshold,
            promise=self.certificate.describe(),
        )
        return replace(self._decision(s, Route.AI, [certified, *s.reasons]), certified=True)

    @staticmethod
    def _decision(s: Scored, route: Route, reasons: list[str], forced: bool = False) -> Decision:
        return Decision(
            id=s.id,
            route=route,
            score=s.score,
            reasons=reasons,
            forced=forced,
            judge_label=s.signals.ai_label if s.signals else None,
            judge_confidence=s.signals.confidence if s.signals else None,
        )


def _top(router: Router, facts: BatchFacts, among: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` rows of ``among`` the router wants most: highest scores, or the PPM
    strategy's own selection. Ties go by id, so a batch's order (its judge calls' finishing
    order) never changes who is picked."""
    k = min(k, len(among))
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if isinstance(router.strategy, PPMStrategy):
        among = _by_id(facts, among)
        chosen = np.arange(len(among))[router.strategy.select(facts.features(among), k)]
        return among[chosen]  # mask or indices
    scores = facts.scores[among]
    edge = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th highest
    over = among[scores > edge]
    tied = _by_id(facts, among[scores == edge])[: k - len(over)]
    return np.concatenate([over, tied])


def _before_settled(ledger: LedgerState, settled: Sequence[tuple[Candidate, Route]]) -> LedgerState:
    """The ledger before a batch's ``settled`` tasks were decided: the ranked rule ranks
    them with the rest as if undecided."""
    humans = sum(route is Route.HUMAN for _, route in settled)
    return replace(
        ledger, n_decided=ledger.n_decided - len(settled), n_human=ledger.n_human - humans
    )


SETTLED_OUTCOME = {Route.HUMAN: Outcome.HUMAN, Route.AI: Outcome.AI}
"""What the ranked rule must make of a settled task for its decision to stand."""


def _ranks(scored: Sequence[Scored], among: np.ndarray) -> np.ndarray:
    """For each row of the mask ``among``, how many of the others rank above it (by score,
    then id, as ``_top`` picks); 0 outside it."""
    rows = sorted(np.flatnonzero(among), key=lambda i: (-scored[i].score, scored[i].id))
    ranks = np.zeros(len(scored), dtype=np.intp)
    ranks[np.array(rows, dtype=np.intp)] = np.arange(len(rows))
    return ranks


def _below(scored: Sequence[Scored], among: np.ndarray) -> np.ndarray:
    """For each row, how many rows of the mask ``among`` rank below it."""
    keys = [(-s.score, s.id) for s in scored]
    ranked = sorted(keys[i] for i in np.flatnonzero(among))
    return np.array([len(ranked) - bisect.bisect_right(ranked, key) for key in keys])


def _by_id(facts: BatchFacts, rows: np.ndarray) -> np.ndarray:
    ids = facts.ids(rows)
    return rows[np.array(sorted(range(len(rows)), key=ids.__getitem__), dtype=np.intp)]


def _doubt(s: Scored) -> str:
    if s.unfillable_tie:
        return "is a tie, which this project's control cannot hold"
    if s.signals.consistent is False:
        return "it changed with the order"
    return "its confidence is 0"
