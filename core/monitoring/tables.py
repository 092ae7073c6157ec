"""The monitoring tables (shared, in the core's schema): one row per checked batch or day, and alerts.

Why a row per run rather than per feature: a run is read whole (the page's drift-over-time chart
and the report both want every column of a run at once), and the per-column detail is a small
JSON list; the columns that queries filter on (model, scope, day, status) are real columns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from trillium.core.db.models import Base, utcnow


class MonitoringRun(Base):
    """Drift, data quality and performance of one batch job or one day of online scoring."""

    __tablename__ = "monitoring_runs"
    __table_args__ = (Index("ix_monitoring_runs_model", "model_name", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True)
    scope: Mapped[str] = mapped_column(String(20))  # "job" or "day"
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    day: Mapped[str | None] = mapped_column(String(10), nullable=True)  # YYYY-MM-DD: the data's day
    label: Mapped[str] = mapped_column(String(200), default="")  # what was checked (a lot, a batch name)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(10), default="ok")  # ok / watch / act
    max_psi: Mapped[float] = mapped_column(Float, default=0.0)
    score_psi: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_drifted: Mapped[int] = mapped_column(Integer, default=0)
    columns: Mapped[list[Any]] = mapped_column(JSON, default=list)
    score: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    performance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class MonitoringAlert(Base):
    """A rule crossed in one run: drift of a feature or the score, missing values, out of range, unseen."""

    __tablename__ = "monitoring_alerts"
    __table_args__ = (Index("ix_monitoring_alerts_model", "model_name", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("monitoring_runs.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[int] = mapped_column(Integer)
    rule: Mapped[str] = mapped_column(String(50))
    severity: Mapped[str] = mapped_column(String(10))
    feature: Mapped[str | None] = mapped_column(String(200), nullable=True)
    value: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_by: Mapped[str] = mapped_column(String(100), default="")
