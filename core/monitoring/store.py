"""Monitoring runs and alerts in the database, and the one call a vertical makes after a batch.

``check_batch`` is the hook: a vertical's batch job (or its day of online scoring) hands in the
frame of model inputs it scored, the scores, and optionally the alerted rows' probabilities;
the reference profile is read from the registry beside the version that scored, the batch is
compared with it, and the run with every rule it crosses (an alert each) is stored. The core
never needs to know what the columns mean.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, select

from trillium.core.db import Database, connect
from trillium.core.errors import InputValidationError, RegistryError
from trillium.core.monitoring.drift import DriftReport, Thresholds, compare
from trillium.core.monitoring.performance import estimate_alert_precision
from trillium.core.monitoring.profile import PROFILE_FILE, SCORE, parse_profile
from trillium.core.monitoring.tables import MonitoringAlert, MonitoringRun
from trillium.core.registry import ModelRecord, ModelRegistry

log = logging.getLogger(__name__)

SCOPES = ("job", "day", "batch")


def load_profile(registry: ModelRegistry, record: ModelRecord) -> dict[str, Any] | None:
    """The version's reference profile (sha256-checked like every artifact), or None if it has none."""
    if PROFILE_FILE not in record.files:
        return None
    return parse_profile(registry.read_file(record, PROFILE_FILE), f"{record.name} v{record.version} {PROFILE_FILE}")


def record_run(report: DriftReport, *, model_name: str, model_version: int, scope: str,
               db: Database | None = None, model_version_id: int | None = None, job_id: int | None = None,
               day: str | None = None, label: str = "", performance: Mapping[str, Any] | None = None) -> int:
    """Store one run and an alert per rule it crosses; returns the run's id.

    Idempotent per (model, version, scope, job, day, label): checking the same job or day
    again replaces its run and alerts, so a resumed job is not counted twice.
    """
    if scope not in SCOPES:
        raise InputValidationError(f"scope must be one of {SCOPES}, got {scope!r}")
    db = db or connect()
    alerts = report.alerts()
    with db.session() as s:
        old = select(MonitoringRun.id).where(
            MonitoringRun.model_name == model_name, MonitoringRun.model_version == model_version,
            MonitoringRun.scope == scope, MonitoringRun.label == label,
            MonitoringRun.job_id.is_(None) if job_id is None else MonitoringRun.job_id == job_id,
            MonitoringRun.day.is_(None) if day is None else MonitoringRun.day == day)
        old_ids = list(s.scalars(old).all())
        if old_ids:
            s.execute(delete(MonitoringAlert).where(MonitoringAlert.run_id.in_(old_ids)))
            s.execute(delete(MonitoringRun).where(MonitoringRun.id.in_(old_ids)))
        run = MonitoringRun(
            model_name=model_name, model_version=model_version, model_version_id=model_version_id, scope=scope,
            job_id=job_id, day=day, label=label, rows=report.rows, status=report.status(),
            max_psi=report.max_psi, score_psi=report.score.psi if report.score else None,
            n_drifted=len(report.drifted) + int(bool(report.score and report.score.drifted)),
            columns=[c.as_dict() for c in report.columns],
            score=report.score.as_dict() if report.score else {},
            performance=dict(performance or {}), thresholds=report.thresholds.as_dict())
        s.add(run)
        s.flush()
        s.add_all(MonitoringAlert(run_id=run.id, model_name=model_name, model_version=model_version,
                                  rule=a["rule"], severity=a["severity"], feature=a["feature"],
                                  value=float(a["value"]), threshold=float(a["threshold"]),
                                  message=f"{' '.join(filter(None, [label or scope, day]))}: {a['message']}")
                  for a in alerts)
        run_id = run.id
    if alerts:
        log.warning("monitoring %s v%s %s %s: %d alert(s): %s", model_name, model_version, scope, day or label,
                    len(alerts), "; ".join(a["message"] for a in alerts[:3]))
    return run_id


def check_batch(registry: ModelRegistry, record: ModelRecord, frame: pd.DataFrame, score: Sequence[float] | np.ndarray,
                *, db: Database | None = None, job_id: int | None = None, label: str = "",
                days: Sequence[Any] | np.ndarray | None = None, alerted: Sequence[bool] | np.ndarray | None = None,
                thresholds: Thresholds | None = None, scope: str = "job", one_day: bool | None = None
                ) -> list[int]:
    """Compare a scored batch with the version's profile and store the run(s); returns their ids.

    ``days`` (one date per row) adds one ``day`` run per day of the data beside the job's run,
    so a job covering two weeks still shows drift day by day. ``alerted`` marks the rows the
    decision step alerted on: each run then carries the precision a calibrated model expects of
    them, with its error. ``one_day`` says the batch is one day of data (calendar columns are
    then left out; default: only for ``scope="day"``). A version registered without a profile is
    skipped with a warning (older versions) and returns no ids.
    """
    profile = load_profile(registry, record)
    if profile is None:
        log.warning("%s v%s has no reference profile: drift is not checked (re-register it to get one)",
                    record.name, record.version)
        return []
    db = db or registry.db
    s = np.asarray(score, np.float64)
    if len(s) != len(frame):
        raise InputValidationError(f"score has {len(s)} values for {len(frame)} rows")
    mask = np.asarray(alerted, bool) if alerted is not None else None
    if mask is not None and len(mask) != len(frame):
        raise InputValidationError(f"alerted has {len(mask)} values for {len(frame)} rows")

    def perf(rows: np.ndarray | slice) -> dict[str, Any]:
        return estimate_alert_precision(s[rows][mask[rows]]) if mask is not None else {}

    common = {"model_name": record.name, "model_version": record.version, "model_version_id": record.id,
              "db": db, "job_id": job_id, "label": label}
    whole_day = scope == "day" if one_day is None else one_day
    ids = [record_run(compare(profile, frame, s, thresholds, one_day=whole_day), scope=scope, performance=perf(slice(None)), **common)]
    if days is not None:
        day_keys = pd.to_datetime(pd.Series(np.asarray(days))).dt.strftime("%Y-%m-%d").to_numpy()
        if len(day_keys) != len(frame):
            raise InputValidationError(f"days has {len(day_keys)} values for {len(frame)} rows")
        for day in sorted(set(day_keys)):
            rows = np.flatnonzero(day_keys == day)
            rep = compare(profile, frame.iloc[rows], s[rows], thresholds, one_day=True)
            ids.append(record_run(rep, scope="day", day=str(day), performance=perf(rows), **common))
    return ids


def _since(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        ts = pd.Timestamp(value)
    except ValueError as exc:
        raise InputValidationError(f"--since {value!r} is not a date or time (e.g. 2026-12-01)") from exc
    return (ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)).to_pydatetime()


def runs(model: str | None = None, *, since: str | datetime | None = None, db: Database | None = None,
         scope: str | None = None) -> pd.DataFrame:
    """The stored runs (oldest first), with their per-column detail."""
    db = db or connect()
    q = select(MonitoringRun).order_by(MonitoringRun.created_at, MonitoringRun.id)
    if model:
        q = q.where(MonitoringRun.model_name == model)
    if scope:
        q = q.where(MonitoringRun.scope == scope)
    t = _since(since)
    if t is not None:
        q = q.where(MonitoringRun.created_at >= t)
    with db.session() as s:
        rows = s.scalars(q).all()
        return pd.DataFrame([{
            "run_id": r.id, "model": r.model_name, "version": r.model_version, "scope": r.scope,
            "job_id": r.job_id, "day": r.day, "label": r.label, "created_at": r.created_at, "rows": r.rows,
            "status": r.status, "max_psi": r.max_psi, "score_psi": r.score_psi, "n_drifted": r.n_drifted,
            "columns": r.columns, "score": r.score, "performance": r.performance,
        } for r in rows], columns=["run_id", "model", "version", "scope", "job_id", "day", "label", "created_at",
                                   "rows", "status", "max_psi", "score_psi", "n_drifted", "columns", "score",
                                   "performance"])


def alerts(model: str | None = None, *, since: str | datetime | None = None, db: Database | None = None,
           open_only: bool = False, limit: int | None = None) -> pd.DataFrame:
    """The stored alerts, newest first."""
    db = db or connect()
    q = select(MonitoringAlert, MonitoringRun.scope, MonitoringRun.day, MonitoringRun.job_id).join(
        MonitoringRun, MonitoringRun.id == MonitoringAlert.run_id).order_by(MonitoringAlert.id.desc())
    if model:
        q = q.where(MonitoringAlert.model_name == model)
    t = _since(since)
    if t is not None:
        q = q.where(MonitoringAlert.created_at >= t)
    if open_only:
        q = q.where(MonitoringAlert.acknowledged_at.is_(None))
    if limit:
        q = q.limit(int(limit))
    with db.session() as s:
        rows = s.execute(q).all()
        return pd.DataFrame([{
            "alert_id": a.id, "model": a.model_name, "version": a.model_version, "scope": scope, "day": day,
            "job_id": job_id, "rule": a.rule, "severity": a.severity, "feature": a.feature, "value": a.value,
            "threshold": a.threshold, "message": a.message, "created_at": a.created_at,
            "acknowledged": a.acknowledged_at is not None,
        } for a, scope, day, job_id in rows], columns=["alert_id", "model", "version", "scope", "day", "job_id",
                                                         "rule", "severity", "feature", "value", "threshold",
                                                         "message", "created_at", "acknowledged"])


def acknowledge(alert_id: int, *, by: str, db: Database | None = None) -> None:
    """Mark an alert as seen (it stays stored; the home page shows open ones)."""
    db = db or connect()
    with db.session() as s:
        a = s.get(MonitoringAlert, int(alert_id))
        if a is None:
            raise InputValidationError(f"no monitoring alert with id {alert_id}")
        a.acknowledged_at = datetime.now(UTC)
        a.acknowledged_by = by
    db.audit("monitoring.acknowledge", target=str(alert_id), actor=by)


def monitored_models(db: Database | None = None) -> list[str]:
    db = db or connect()
    with db.session() as s:
        return sorted(s.scalars(select(MonitoringRun.model_name).distinct()).all())


def profile_of(registry: ModelRegistry, name: str, ref: int | str = "production") -> dict[str, Any]:
    """The reference profile of a registered version; an error naming the version if it has none."""
    record = registry.get(name, ref)
    profile = load_profile(registry, record)
    if profile is None:
        raise RegistryError(f"{name} v{record.version} was registered without a reference profile")
    return profile


__all__ = ["SCORE", "acknowledge", "alerts", "check_batch", "load_profile", "monitored_models", "profile_of",
           "record_run", "runs"]
