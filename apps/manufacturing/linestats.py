"""Line statistics for visual inspection: stored verdicts and a p-chart of the defect rate.

Every inspected image becomes one row of the shared ``predictions`` table (domain
``manufacturing``), so the dashboard, the CLI and batch jobs read one source of truth. On top
of it sits statistical process control: a p-chart (fraction defective per time bucket with
3-sigma limits that vary with the bucket's sample size) that separates a process that drifts
or jumps from one that only shows its usual noise.

SPC works in two phases, and so does this module. Phase I: ``set_control_limits`` fixes the
centre line p-bar from a period judged stable and stores it (``control_limits`` table).
Phase II: ``p_chart(limits="stored")`` judges new data against that fixed centre line; a
centre line recomputed from the charted data itself would follow a drifting process and hide
the drift.

An ``image_id`` identifies one inspected unit. The statistics count each unit once, with its
latest stored verdict: an image re-inspected by a later job (a new model, a re-run) must not
double its weight in the defect rate.
"""

from __future__ import annotations

import getpass
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from sqlalchemy import Select, func, select

from trillium.core.db import Database, Prediction, connect
from trillium.core.errors import InputValidationError, TrilliumError
from trillium.manufacturing.tables import ControlLimit

log = logging.getLogger(__name__)

DOMAIN = "manufacturing"
DEFECT = "defect"
GOOD = "good"
VERDICTS = (DEFECT, GOOD)
DEFAULT_LINE = "default"
RUN_LENGTH = 8  # Western Electric / Nelson rule 2 as most SPC packages apply it: 8 in a row on one side
SIGMA = 3.0
UNTYPED = "unspecified"  # the defect_type bucket of defects stored without a type

INSPECTION_COLUMNS = ["image_id", "score", "verdict", "defect_type", "overlay", "line", "inspected_at",
                      "job_id", "prediction_id"]
POINT_COLUMNS = ["bucket_start", "n", "defects", "p", "ucl", "lcl", "out_of_control", "run_rule"]


class ControlLimitsError(TrilliumError, ValueError):
    """Control limits cannot be set or found: no inspections in the baseline period, or no
    stored limits for a line charted with ``limits="stored"``. A ``ValueError`` too, because the
    caller asked for something the data cannot give."""


@dataclass(frozen=True)
class ControlLimits:
    """A stored phase-I centre line of one production line (a row of ``control_limits``)."""

    id: int
    line: str
    p_bar: float
    n_baseline: int
    baseline_start: datetime
    baseline_end: datetime
    created_at: datetime
    created_by: str

    def describe(self) -> str:
        return (f"stored limits #{self.id} of line {self.line!r}: p-bar {self.p_bar:.4g} from {self.n_baseline} "
                f"inspections in [{self.baseline_start.isoformat()}, {self.baseline_end.isoformat()}), "
                f"set by {self.created_by or 'unknown'} at {self.created_at.isoformat()}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "line": self.line, "p_bar": self.p_bar, "n_baseline": self.n_baseline,
            "baseline_start": self.baseline_start.isoformat(), "baseline_end": self.baseline_end.isoformat(),
            "created_at": self.created_at.isoformat(), "created_by": self.created_by,
        }


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrames with == has no single truth value
class PChart:
    """A p-chart: one row per non-empty time bucket, the centre line and where it came from.

    ``points`` columns: bucket_start (UTC), n, defects, p, ucl, lcl, out_of_control (p outside
    the 3-sigma limits), run_rule (the bucket completes or extends a run of 8 on one side of the
    centre line). ``p_bar`` is None when there is nothing to chart and no stored limits.
    """

    points: pd.DataFrame
    p_bar: float | None
    baseline: str
    line: str
    freq: str
    limits: ControlLimits | None = None

    @property
    def signals(self) -> pd.DataFrame:
        """The buckets that call for a look: out of control or in a run."""
        return self.points[self.points["out_of_control"] | self.points["run_rule"]]

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only, so ``json.dumps`` takes it as is (NaN becomes None)."""
        return {
            "line": self.line, "freq": self.freq, "p_bar": self.p_bar, "baseline": self.baseline,
            "limits": self.limits.to_dict() if self.limits else None,
            "points": [
                {
                    "bucket_start": pd.Timestamp(r["bucket_start"]).isoformat(),
                    "n": int(r["n"]), "defects": int(r["defects"]),
                    "p": _num(r["p"]), "ucl": _num(r["ucl"]), "lcl": _num(r["lcl"]),
                    "out_of_control": bool(r["out_of_control"]), "run_rule": bool(r["run_rule"]),
                }
                for r in self.points.to_dict("records")
            ],
        }


# --- storing and reading inspections -------------------------------------------------------


def store_inspections(records: pd.DataFrame | Iterable[Mapping[str, Any]], *, db: Database | None = None,
                      line: str = DEFAULT_LINE, model_version_id: int | None = None,
                      job_id: int | None = None) -> int:
    """Store inspection verdicts as predictions; returns the number of rows written now.

    Each record needs ``image_id``, ``score`` and ``verdict`` ("defect" or "good"); optional
    ``defect_type``, ``inspected_at`` (default: now, UTC; naive times are taken as UTC),
    ``overlay`` (path of the heatmap image) and ``threshold``. Every record is checked before
    anything is written, so a bad one leaves the database as it was. With a ``job_id`` it is
    idempotent: images that job already stored are skipped, so a resumed or repeated job
    writes no duplicates.
    """
    rows = _records(records)
    if not line:
        raise InputValidationError("line must be a non-empty name of the production line")
    now = datetime.now(UTC)
    checked = [_check_record(r, i, now) for i, r in enumerate(rows)]
    db = db or connect()
    with db.session() as s:
        if job_id is not None:
            have = set(s.scalars(select(Prediction.entity_id).where(Prediction.domain == DOMAIN,
                                                                    Prediction.job_id == job_id)).all())
            fresh: dict[str, dict[str, Any]] = {}
            for r in checked:  # a job's records are idempotent per image: the first one counts
                if r["image_id"] not in have:
                    fresh.setdefault(r["image_id"], r)
            checked = list(fresh.values())
        s.add_all(
            Prediction(
                domain=DOMAIN, entity_id=r["image_id"], model_version_id=model_version_id, job_id=job_id,
                score=r["score"], decision=r["verdict"], created_at=r["inspected_at"],
                details={
                    "line": line, "defect_type": r["defect_type"], "overlay": r["overlay"],
                    "threshold": r["threshold"], "inspected_at": r["inspected_at"].isoformat(),
                },
            )
            for r in checked
        )
    log.info("stored %d inspections of line %r (job %s)", len(checked), line, job_id)
    return len(checked)


def recent_inspections(*, db: Database | None = None, line: str | None = None, limit: int = 50) -> pd.DataFrame:
    """The latest inspections, newest first, one row per image (its latest verdict); all
    lines unless ``line`` is given. Columns: ``INSPECTION_COLUMNS``."""
    if limit < 1:
        raise InputValidationError(f"limit must be >= 1, got {limit}")
    db = db or connect()
    with db.session() as s:
        rows = s.execute(
            select(Prediction.id, Prediction.entity_id, Prediction.score, Prediction.decision, Prediction.details,
                   Prediction.created_at, Prediction.job_id)
            .where(Prediction.id.in_(_latest_ids(line)))
            .order_by(Prediction.created_at.desc(), Prediction.id.desc())
            .limit(limit)
        ).all()
    frame = pd.DataFrame([{
        "image_id": r.entity_id, "score": r.score, "verdict": r.decision,
        "defect_type": (r.details or {}).get("defect_type"), "overlay": (r.details or {}).get("overlay"),
        "line": (r.details or {}).get("line"), "inspected_at": r.created_at,
        "job_id": r.job_id, "prediction_id": r.id,
    } for r in rows], columns=INSPECTION_COLUMNS)
    frame["inspected_at"] = pd.to_datetime(frame["inspected_at"], utc=True)
    text = ["defect_type", "overlay", "line"]
    # One missing-value convention for callers: None (pandas would guess NaN for some columns).
    frame[text] = frame[text].astype(object).where(frame[text].notna(), None)
    return frame


def defect_rate_summary(*, db: Database | None = None, line: str | None = None) -> dict[str, Any]:
    """Counts for the dashboard's headline: inspected, defects, rate (None when nothing was
    inspected), defects per type (untyped ones under ``"unspecified"``), first and last
    inspection time. One count per image, its latest verdict."""
    db = db or connect()
    defect_type = Prediction.details["defect_type"].as_string().label("defect_type")
    latest = _latest_ids(line)
    with db.session() as s:
        groups = s.execute(
            select(Prediction.decision, defect_type, func.count().label("n"))
            .where(Prediction.id.in_(latest))
            .group_by(Prediction.decision, defect_type)
        ).all()
        first, last = s.execute(select(func.min(Prediction.created_at), func.max(Prediction.created_at))
                                .where(Prediction.id.in_(latest))).one()
    inspected = sum(g.n for g in groups)
    by_type: dict[str, int] = {}
    for g in groups:
        if g.decision == DEFECT:
            key = g.defect_type or UNTYPED
            by_type[key] = by_type.get(key, 0) + int(g.n)
    defects = sum(by_type.values())
    return {
        "line": line, "inspected": int(inspected), "defects": int(defects), "good": int(inspected - defects),
        "rate": defects / inspected if inspected else None,
        "by_defect_type": dict(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
        "first_inspected_at": _iso(first), "last_inspected_at": _iso(last),
    }


# --- phase I: control limits from a baseline period ---------------------------------------


def set_control_limits(*, db: Database | None = None, line: str, start: Any, end: Any,
                       by: str | None = None) -> ControlLimits:
    """Fix the line's centre line p-bar from its inspections in ``[start, end)`` and store it.

    Choose a period in which the process was stable (no known assignable cause): later charts
    with ``limits="stored"`` judge new data against it. ``by`` names who set it (default: the
    login name); the action also goes to the audit log. Raises ``ControlLimitsError`` (a
    ``ValueError``) when the period holds no inspection of the line.
    """
    lo, hi = _utc(start, "start"), _utc(end, "end")
    if hi <= lo:
        raise InputValidationError(f"the baseline period must end after it starts, got [{lo}, {hi})")
    db = db or connect()
    frame = _load_verdicts(db, line, lo, hi)
    if frame.empty:
        raise ControlLimitsError(
            f"no inspections of line {line!r} in the baseline period [{lo.isoformat()}, {hi.isoformat()}): "
            "store inspections first, or choose a period (and line name) that has them"
        )
    n = len(frame)
    p_bar = float(frame["defect"].sum()) / n
    actor = by or _whoami()
    with db.session() as s:
        row = ControlLimit(line=line, p_bar=p_bar, n_baseline=n, baseline_start=lo, baseline_end=hi,
                           created_by=actor)
        s.add(row)
        s.flush()
        limits = _to_limits(row)
    db.audit("manufacturing.control_limits", target=line, actor=actor, limits_id=limits.id, p_bar=p_bar,
             n_baseline=n, baseline_start=lo.isoformat(), baseline_end=hi.isoformat())
    log.info("%s", limits.describe())
    return limits


def control_limits(*, db: Database | None = None, line: str) -> ControlLimits | None:
    """The latest stored control limits of ``line``, or None if none were ever set."""
    db = db or connect()
    with db.session() as s:
        row = s.scalars(select(ControlLimit).where(ControlLimit.line == line)
                        .order_by(ControlLimit.id.desc()).limit(1)).first()
        return _to_limits(row) if row is not None else None


# --- the p-chart ----------------------------------------------------------------------------


def p_chart(*, db: Database | None = None, line: str = DEFAULT_LINE, freq: str = "1h", start: Any = None,
            end: Any = None, limits: Literal["stored"] | ControlLimits | float | None = None) -> PChart:
    """The p-chart of ``line``'s inspections in ``[start, end)``, bucketed by ``freq`` (a pandas
    offset alias: "15min", "1h", "1D"; buckets start on clock boundaries, empty ones are left out).

    ``limits`` picks the centre line: None computes it from the charted data (phase I, a
    first look); ``"stored"`` uses the line's latest ``set_control_limits`` (phase II);
    a ``ControlLimits`` or a number in [0, 1] uses that one. With nothing to chart the points
    frame is empty (and p_bar None unless limits were given).
    """
    offset = _offset(freq)
    lo = _utc(start, "start") if start is not None else None
    hi = _utc(end, "end") if end is not None else None
    db = db or connect()
    fixed = _resolve_limits(db, line, limits)
    frame = _load_verdicts(db, line, lo, hi)
    counts = _bucket(frame, offset)
    window = f"[{lo.isoformat() if lo else '-inf'}, {hi.isoformat() if hi else '+inf'})"
    if isinstance(fixed, ControlLimits):
        p_bar: float | None = fixed.p_bar
        baseline = fixed.describe()
    elif fixed is not None:
        p_bar, baseline = fixed, f"given p-bar {fixed:.4g}"
    elif counts.empty:
        p_bar, baseline = None, f"no inspections of line {line!r} in {window}"
    else:
        p_bar = float(counts["defects"].sum()) / float(counts["n"].sum())
        baseline = f"the charted data: {int(counts['n'].sum())} inspections of line {line!r} in {window}"
    points = p_chart_points(counts, p_bar)
    return PChart(points=points, p_bar=p_bar, baseline=baseline, line=line, freq=freq,
                  limits=fixed if isinstance(fixed, ControlLimits) else None)


def p_chart_points(counts: pd.DataFrame, p_bar: float | None, *, sigma: float = SIGMA,
                   run_length: int = RUN_LENGTH) -> pd.DataFrame:
    """Limits and signals for per-bucket counts (columns bucket_start, n, defects; n > 0).

    UCL/LCL = p-bar +/- sigma * sqrt(p-bar (1 - p-bar) / n_i), clipped to [0, 1]: each bucket
    gets its own limits because its sample size differs. A bucket exactly on the centre line
    breaks a run. Kept apart from the database so the arithmetic can be checked on its own.
    """
    out = counts.loc[:, ["bucket_start", "n", "defects"]].reset_index(drop=True).copy()
    out["n"] = out["n"].astype("int64")
    out["defects"] = out["defects"].astype("int64")
    if (out["n"] <= 0).any():
        raise InputValidationError("every bucket of a p-chart needs n > 0 inspections")
    out["p"] = out["defects"] / out["n"]
    if p_bar is None or out.empty:
        out["ucl"] = np.nan
        out["lcl"] = np.nan
        out["out_of_control"] = False
        out["run_rule"] = False
        return out.astype({"out_of_control": bool, "run_rule": bool})[POINT_COLUMNS]
    half = sigma * np.sqrt(p_bar * (1.0 - p_bar) / out["n"].to_numpy(dtype=float))
    out["ucl"] = np.minimum(1.0, p_bar + half)
    out["lcl"] = np.maximum(0.0, p_bar - half)
    out["out_of_control"] = (out["p"] > out["ucl"]) | (out["p"] < out["lcl"])
    out["run_rule"] = _runs(out["p"].to_numpy(dtype=float), p_bar) >= run_length
    return out[POINT_COLUMNS]


def _runs(p: np.ndarray, centre: float) -> np.ndarray:
    """For each point, the length of the run on one side of the centre that it ends."""
    side = np.where(np.isclose(p, centre, rtol=0.0, atol=1e-12), 0, np.sign(p - centre)).astype(int)
    runs = np.zeros(len(p), dtype=int)
    for i, s in enumerate(side):
        runs[i] = 0 if s == 0 else (runs[i - 1] + 1 if i and side[i - 1] == s else 1)
    return runs


# --- helpers --------------------------------------------------------------------------------


def _latest_ids(line: str | None) -> Select[tuple[int]]:
    """The id of each image's latest inspection (optionally on one line), as a subquery."""
    q = select(func.max(Prediction.id)).where(Prediction.domain == DOMAIN)
    if line is not None:
        q = q.where(Prediction.details["line"].as_string() == line)
    return q.group_by(Prediction.entity_id)


def _load_verdicts(db: Database, line: str, lo: datetime | None, hi: datetime | None) -> pd.DataFrame:
    """One row per image of ``line`` inspected in [lo, hi): inspected_at (UTC) and defect (bool)."""
    q = select(Prediction.created_at, Prediction.decision).where(Prediction.id.in_(_latest_ids(line)))
    if lo is not None:
        q = q.where(Prediction.created_at >= lo)
    if hi is not None:
        q = q.where(Prediction.created_at < hi)
    with db.session() as s:
        rows = s.execute(q).all()
    return pd.DataFrame({
        # SQLite hands back naive UTC, PostgreSQL aware times: utc=True makes both UTC.
        "inspected_at": pd.to_datetime([r.created_at for r in rows], utc=True),
        "defect": np.array([r.decision == DEFECT for r in rows], dtype=bool),
    })


def _bucket(frame: pd.DataFrame, offset: pd.DateOffset) -> pd.DataFrame:
    """Counts per time bucket (left-closed, labelled by its start); empty buckets dropped."""
    if frame.empty:
        return pd.DataFrame({"bucket_start": pd.DatetimeIndex([], tz="UTC"), "n": np.array([], dtype="int64"),
                             "defects": np.array([], dtype="int64")})
    series = pd.Series(frame["defect"].astype("int64").to_numpy(), index=pd.DatetimeIndex(frame["inspected_at"]))
    grouped = series.sort_index().resample(offset, label="left", closed="left")
    counts = pd.DataFrame({"n": grouped.count(), "defects": grouped.sum()})
    counts = counts[counts["n"] > 0]
    return counts.rename_axis("bucket_start").reset_index()


def _resolve_limits(db: Database, line: str, limits: Any) -> ControlLimits | float | None:
    if limits is None or isinstance(limits, ControlLimits):
        return limits
    if isinstance(limits, str):
        if limits != "stored":
            raise InputValidationError(f"limits must be None, 'stored', a ControlLimits or a p-bar; got {limits!r}")
        stored = control_limits(db=db, line=line)
        if stored is None:
            raise ControlLimitsError(
                f"no stored control limits for line {line!r}: set them first from a stable baseline period "
                f"with set_control_limits(line={line!r}, start=..., end=...), or chart with limits=None"
            )
        return stored
    if isinstance(limits, (int, float)) and not isinstance(limits, bool) and 0.0 <= float(limits) <= 1.0:
        return float(limits)
    raise InputValidationError(f"a given p-bar must be a fraction in [0, 1], got {limits!r}")


def _records(records: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(records, pd.DataFrame):
        return records.to_dict("records")
    if isinstance(records, Mapping):
        raise InputValidationError("records must be a DataFrame or an iterable of dicts, got a single dict")
    return list(records)


def _check_record(record: Mapping[str, Any], row: int, now: datetime) -> dict[str, Any]:
    """A validated, normalized record; the error names the row and the field."""
    if not isinstance(record, Mapping):
        raise InputValidationError(f"inspection record {row}: expected a dict, got {type(record).__name__}")
    for field in ("image_id", "score", "verdict"):
        if _missing(record.get(field)):
            raise InputValidationError(f"inspection record {row}: missing required field {field!r}")
    image_id = str(record["image_id"])
    if len(image_id) > 200:
        raise InputValidationError(f"inspection record {row}: image_id longer than 200 characters")
    try:
        score = float(record["score"])
    except (TypeError, ValueError):
        raise InputValidationError(f"inspection record {row} ({image_id}): score {record['score']!r} is not a number") from None
    if not math.isfinite(score):
        raise InputValidationError(f"inspection record {row} ({image_id}): score must be finite, got {score}")
    verdict = str(record["verdict"])
    if verdict not in VERDICTS:
        raise InputValidationError(
            f"inspection record {row} ({image_id}): verdict must be one of {VERDICTS}, got {verdict!r}")
    at = record.get("inspected_at")
    threshold = record.get("threshold")
    try:
        threshold = None if _missing(threshold) else float(threshold)
    except (TypeError, ValueError):
        raise InputValidationError(
            f"inspection record {row} ({image_id}): threshold {threshold!r} is not a number") from None
    return {
        "image_id": image_id, "score": score, "verdict": verdict,
        "defect_type": None if _missing(record.get("defect_type")) else str(record["defect_type"]),
        "overlay": None if _missing(record.get("overlay")) else str(record["overlay"]),
        "threshold": threshold,
        "inspected_at": now if _missing(at) else _utc(at, f"inspection record {row} ({image_id}): inspected_at"),
    }


def _missing(value: Any) -> bool:
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _utc(value: Any, what: str) -> datetime:
    """A timezone-aware UTC datetime; naive input is taken as UTC (how the predictions are stored)."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise InputValidationError(f"{what}: {value!r} is not a date/time ({exc})") from None
    if ts is pd.NaT:
        raise InputValidationError(f"{what}: a date/time is required, got {value!r}")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _offset(freq: str) -> pd.DateOffset:
    try:
        return to_offset(freq)
    except (TypeError, ValueError):
        raise InputValidationError(
            f"freq {freq!r} is not a pandas offset alias; use e.g. '15min', '1h', '8h' or '1D'") from None


def _to_limits(row: ControlLimit) -> ControlLimits:
    return ControlLimits(
        id=row.id, line=row.line, p_bar=row.p_bar, n_baseline=int(row.n_baseline),
        baseline_start=_utc(row.baseline_start, "baseline_start"), baseline_end=_utc(row.baseline_end, "baseline_end"),
        created_at=_utc(row.created_at, "created_at"), created_by=row.created_by,
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else _utc(value, "time").isoformat()


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "unknown"
