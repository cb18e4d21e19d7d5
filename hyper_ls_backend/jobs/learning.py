"""The learn flow: a project's human labels -> a refitted router, adopted if it measures well.

Runs in the background (a refit of thousands of labels takes seconds); the import flow
keeps routing with the current version meanwhile and picks up an adopted one on its next
task. Every adopted version is stored with the quality that got it adopted.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.learning import RefitOutcome, Refitter
from hyper_ls_backend.jobs.pipeline import RouterRegistry
from hyper_ls_backend.store import Store

log = logging.getLogger(__name__)


class Learner:
    def __init__(self, store: Store, routers: RouterRegistry, prior_strength: float) -> None:
        self._store, self._routers = store, routers
        self._prior_strength = prior_strength
        self._locks: defaultdict[int, threading.Lock] = defaultdict(threading.Lock)

    def refit(self, project_id: int) -> RefitOutcome:
        """Refit on every label the project has; one refit per project at a time."""
        with self._locks[project_id]:
            labelled = [
                Comparison.model_validate(record)
                for record in self._store.labelled_comparisons(project_id)
            ]
            seen = [Comparison.model_validate(r) for r in self._store.seen_comparisons(project_id)]
            refitter = Refitter(self._prior_strength)
            # Labels so far come from tasks the router sent to humans: propensity 1.
            refitter.observe(labelled, propensity=1.0)
            refitter.see(seen)
            current = self._routers.for_project(project_id)
            outcome = refitter.refit(self._routers.prior, current)
            if outcome.adopted:
                router = outcome.router
                self._store.adopt_router(
                    project_id, router.version, router.to_dict(), outcome.quality
                )
            log.info(
                "project %d: refit on %d labels %s (%s)",
                project_id,
                len(labelled),
                "adopted" if outcome.adopted else "not adopted",
                outcome.quality,
            )
            return outcome
