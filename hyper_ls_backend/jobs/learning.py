"""The learn flow: a project's human labels -> a refitted router, adopted if it measures well.

Runs in the background (a refit of thousands of labels takes seconds); the import flow
keeps routing with the current version meanwhile and picks up an adopted one on its next
task. Every refit's version is stored with its measured quality, adopted or rejected, and
every refit's verdict (also one too early to propose a version) with its reason in plain
words, so ``/status`` can say what the last training did.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.learning import RefitOutcome, Refitter
from hyper_ls_backend.jobs.pipeline import RouterRegistry
from hyper_ls_backend.settings import Settings
from hyper_ls_backend.store import Store

log = logging.getLogger(__name__)


class Learner:
    def __init__(self, settings: Settings, store: Store, routers: RouterRegistry) -> None:
        self._settings, self._store, self._routers = settings, store, routers
        self._locks: defaultdict[int, threading.Lock] = defaultdict(threading.Lock)

    def refit(self, project_id: int) -> RefitOutcome:
        """Refit on every label the project has; one refit per project at a time."""
        with self._locks[project_id]:
            self._store.begin_refit(project_id)
            rows = self._store.labelled_comparisons(project_id)
            seen = [Comparison.model_validate(r) for r in self._store.seen_comparisons(project_id)]
            project = self._store.project(project_id)
            settings = self._settings.for_project(project.extra_params if project else None)
            refitter = Refitter(settings.hyper_prior_strength)
            # The router's own picks were sure to be labelled; an audit had the inclusion
            # probability its decision recorded (an earlier version's: the audit share).
            refitter.observe(
                [Comparison.model_validate(row.record) for row in rows if not row.audit],
                propensity=1.0,
            )
            for row in rows:
                probability = (
                    settings.hyper_audit_share
                    if row.inclusion_probability is None
                    else row.inclusion_probability
                )
                # A quality target's audits calibrate it; learning from them too would
                # make the router depend on its own calibration (docs/guarantee.md).
                calibrates = settings.hyper_target_agreement is not None
                if row.audit and probability > 0 and not calibrates:
                    refitter.observe([Comparison.model_validate(row.record)], probability)
            refitter.see(seen)
            current = self._routers.for_project(project_id)
            outcome = refitter.refit(self._routers.prior, current)
            measured = outcome.router if outcome.adopted else outcome.candidate
            if measured is not None:
                self._store.record_router(
                    project_id,
                    measured.version,
                    measured.to_dict(),
                    outcome.quality,
                    adopt=outcome.adopted,
                )
            self._store.record_refit(
                project_id,
                n_labels=len(rows),
                candidate=measured.version if measured is not None else None,
                adopted=outcome.adopted,
                in_use=outcome.router.version,
                in_use_auc=outcome.in_use_auc,
                reason=outcome.reason,
            )
            log.info(
                "project %d: refit on %d labels %s: %s (%s)",
                project_id,
                len(rows),
                "adopted" if outcome.adopted else "not adopted",
                outcome.reason,
                outcome.quality,
            )
            return outcome
