"""Prometheus metrics served on ``/metrics``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

if TYPE_CHECKING:
    from hyper_ls_backend.server.model import HyperModel

WEBHOOKS = Counter("hyper_webhooks_total", "Webhook events received", ["action"])
DECISIONS = Gauge("hyper_decisions", "Routing decisions stored", ["project", "route"])
PENDING_JOBS = Gauge("hyper_pending_jobs", "Jobs waiting in the queue")
RECEIVED_IMPORTS = Gauge("hyper_received_imports", "Imports received, not yet recorded")


def refresh(model: HyperModel) -> None:
    """Read the gauges from the database (the source of truth) at scrape time."""
    for (project, route), count in model.store.decision_counts().items():
        DECISIONS.labels(str(project), route).set(count)
    PENDING_JOBS.set(model.queue.pending())
    RECEIVED_IMPORTS.set(model.store.received_count())
