"""Certifying a project's quality target from its audits (docs/guarantee.md).

A project with ``HYPER_TARGET_AGREEMENT`` audits for calibration: its audits are a uniform
sample of the routable tasks, each with its inclusion probability, and nothing else. After
every refit (and "Start training") the certifier looks at them again: the audited tasks
with a human label, scored by the router the project routes with now, certify the loosest
threshold they can (``AgreementGuarantee``, weighted by ``1 / inclusion probability``).

**Repeated looks.** Each look is a new test on a grown sample, so each spends part of the
confidence: look ``k`` tests at ``delta_k = delta x 6 / (pi^2 k^2)``, and since
``sum delta_k = delta``, with probability at least ``1 - delta`` every certificate the
campaign ever issues holds (a union bound). A look is taken only when there is something
new to see: more audits, or another router. The router never learns from audit labels
while a target is set (``jobs/learning.py``), so it stays independent of its calibration.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from hyper_ls_backend.core.calibration import agreement_with_one_human, usable
from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.guarantee import AgreementGuarantee
from hyper_ls_backend.jobs.pipeline import RouterRegistry
from hyper_ls_backend.settings import Settings
from hyper_ls_backend.store import Store
from hyper_ls_backend.store.schema import CertificationRecord

log = logging.getLogger(__name__)


def look_delta(delta: float, look: int) -> float:
    """The share of ``delta`` look number ``look`` (1, 2, ...) may spend."""
    return delta * 6.0 / (math.pi**2 * look**2)


class Certifier:
    def __init__(self, settings: Settings, store: Store, routers: RouterRegistry) -> None:
        self._settings, self._store, self._routers = settings, store, routers

    def certify(self, project_id: int) -> CertificationRecord | None:
        """Look at the project's audits again if it has a target and something is new;
        returns the look recorded (None when none was taken)."""
        project = self._store.project(project_id)
        if project is None:
            return None
        settings = self._settings.for_project(project.extra_params)
        target = settings.hyper_target_agreement
        if target is None:
            return None
        router = self._routers.for_project(project_id)
        audits = [row for row in self._store.labelled_comparisons(project_id) if row.audit]
        comparisons = [Comparison.model_validate(row.record) for row in audits]
        weights = {
            c.id: 1.0 / (row.inclusion_probability or 1.0)
            for c, row in zip(comparisons, audits, strict=True)
        }
        calibration = usable(comparisons)
        looks = self._store.certifications(project_id)
        last = looks[-1] if looks else None
        if last is not None and (last.n_calibration, last.router_version) == (
            len(calibration),
            router.version,
        ):
            return None
        look = len(looks) + 1
        delta = look_delta(1.0 - settings.hyper_target_confidence, look)
        guarantee = AgreementGuarantee(target, 1.0 - delta)
        scores = router.score(calibration)[0] if calibration else np.zeros(0)
        guarantee.fit(
            scores,
            agreement_with_one_human(calibration) if calibration else np.zeros(0),
            [weights[c.id] for c in calibration],
        )
        certified = guarantee.certified_
        record = CertificationRecord(
            project_id=project_id,
            look=look,
            router_version=router.version,
            target_agreement=target,
            confidence=settings.hyper_target_confidence,
            delta=delta,
            n_calibration=len(calibration),
            threshold=certified.threshold if certified else None,
            lower_bound=certified.lower_bound if certified else None,
            agreement=certified.agreement if certified else None,
            coverage=certified.coverage if certified else None,
            curve=[
                {
                    "threshold": t.threshold,
                    "n": t.n,
                    "coverage": t.coverage,
                    "agreement": t.agreement,
                    "lower_bound": t.lower_bound,
                    "passed": t.passed,
                }
                for t in guarantee.curve_
            ],
            reason=_reason(guarantee, look, delta),
        )
        self._store.record_certification(record)
        log.info("project %d: certification look %d: %s", project_id, look, record.reason)
        return record


def _reason(guarantee: AgreementGuarantee, look: int, delta: float) -> str:
    spent = f"look {look}, testing at {1 - delta:.1%}"
    if guarantee.certified_ is None:
        return f"not certified ({spent}): {guarantee.why_not()}"
    certified = guarantee.certified_
    return (
        f"certified ({spent}): threshold {certified.threshold:.4f}, the judge's labels "
        f"agree with a human at least {certified.lower_bound:.1%} of the time under it "
        f"({certified.n} of {guarantee.n_calibration_} audits, {certified.agreement:.1%})"
    )
