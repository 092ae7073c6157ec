"""The manufacturing vertical's own table: the p-chart's phase-I control limits per line."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from trillium.core.db.models import Base, utcnow


class ControlLimit(Base):
    """A p-chart centre line fixed from a baseline period (SPC phase I) for one production line.

    Later charts (phase II) judge new inspections against it instead of recomputing the centre
    line from the data they chart, which would let a drifting process hide its own drift.
    Rows are never updated: a new baseline is a new row, the latest one per line applies.
    """

    __tablename__ = "control_limits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    line: Mapped[str] = mapped_column(String(200), index=True)
    p_bar: Mapped[float] = mapped_column(Float)
    n_baseline: Mapped[int] = mapped_column(BigInteger)
    baseline_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    baseline_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100), default="")
