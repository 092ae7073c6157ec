"""Prometheus gauges of model monitoring, read from the database when ``/metrics`` is scraped.

Why read at scrape time rather than set gauges when a run is stored: runs are stored by batch
jobs and the demo, in other processes than the service's workers, and the database is where
they meet. Each scrape costs two small queries (the latest run per model and version, the open
alerts), which a scrape interval of seconds can afford; a failing read logs and yields nothing,
so ``/metrics`` itself never fails because of monitoring.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from trillium.core.db import Database
from trillium.core.monitoring.tables import MonitoringAlert, MonitoringRun

log = logging.getLogger(__name__)

STATUS_LEVEL = {"ok": 0, "watch": 1, "act": 2}


class MonitoringCollector:
    """The latest run's PSI, status and expected precision per model version; open alerts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        psi = GaugeMetricFamily("trillium_monitoring_max_psi", "Largest PSI of a column in the latest "
                                "monitoring run (0.1 watch, 0.25 act).", labels=["model", "version"])
        score_psi = GaugeMetricFamily("trillium_monitoring_score_psi", "PSI of the score in the latest run.",
                                      labels=["model", "version"])
        status = GaugeMetricFamily("trillium_monitoring_status", "Latest run's status: 0 ok, 1 watch, 2 act.",
                                   labels=["model", "version"])
        precision = GaugeMetricFamily("trillium_monitoring_estimated_precision", "Alert precision the calibrated "
                                      "scores expect, latest run.", labels=["model", "version"])
        open_alerts = GaugeMetricFamily("trillium_monitoring_open_alerts", "Monitoring alerts not acknowledged.",
                                        labels=["model", "severity"])
        try:
            with self.db.session() as s:
                latest = (select(MonitoringRun.model_name, MonitoringRun.model_version,
                                 func.max(MonitoringRun.id).label("id"))
                          .group_by(MonitoringRun.model_name, MonitoringRun.model_version).subquery())
                runs = s.scalars(select(MonitoringRun).join(latest, MonitoringRun.id == latest.c.id)).all()
                counts = s.execute(select(MonitoringAlert.model_name, MonitoringAlert.severity, func.count())
                                   .where(MonitoringAlert.acknowledged_at.is_(None))
                                   .group_by(MonitoringAlert.model_name, MonitoringAlert.severity)).all()
        except Exception as exc:  # noqa: BLE001 - logged; the service's own metrics must still answer
            log.warning("monitoring gauges unavailable: %s", type(exc).__name__)
            return
        for r in runs:
            labels = [r.model_name, str(r.model_version)]
            psi.add_metric(labels, r.max_psi)
            status.add_metric(labels, STATUS_LEVEL.get(r.status, 0))
            if r.score_psi is not None:
                score_psi.add_metric(labels, r.score_psi)
            est = (r.performance or {}).get("estimated_precision")
            if est is not None:
                precision.add_metric(labels, est)
        for model, severity, n in counts:
            open_alerts.add_metric([model, severity], n)
        yield from (psi, score_psi, status, precision, open_alerts)


def render(db: Database) -> bytes:
    """The monitoring gauges in Prometheus' text format."""
    registry = CollectorRegistry()
    registry.register(MonitoringCollector(db))
    return generate_latest(registry)


__all__ = ["MonitoringCollector", "render"]
