"""Line statistics: inspections stored as predictions, and the p-chart of the defect rate.

The expected limits are computed here by hand with numpy from the known pattern of defects,
so the module's arithmetic is checked against the textbook formula, not against itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from trillium.core import db as dbmod
from trillium.core.db import AuditEvent, Job, Prediction
from trillium.core.errors import InputValidationError
from trillium.manufacturing.linestats import (
    INSPECTION_COLUMNS,
    POINT_COLUMNS,
    ControlLimitsError,
    control_limits,
    defect_rate_summary,
    p_chart,
    p_chart_points,
    recent_inspections,
    set_control_limits,
    store_inspections,
)

T0 = datetime(2024, 3, 4, 6, 0, tzinfo=UTC)
TYPES = ("scratch", "dent", "stain")


def hourly(defects: list[int], sizes: list[int], *, start: datetime = T0, prefix: str = "img") -> list[dict]:
    """Inspections spread evenly over consecutive hours: bucket i has sizes[i] images, of
    which the first defects[i] are defects."""
    records = []
    for b, (d, n) in enumerate(zip(defects, sizes, strict=True)):
        for k in range(n):
            bad = k < d
            records.append(
                {
                    "image_id": f"{prefix}-{b:02d}-{k:03d}",
                    "score": 0.9 if bad else 0.1,
                    "verdict": "defect" if bad else "good",
                    "defect_type": TYPES[k % len(TYPES)] if bad else None,
                    "inspected_at": start + timedelta(hours=b, seconds=k * 3600 // n),
                    "overlay": f"/overlays/{prefix}-{b}-{k}.png" if bad else None,
                    "threshold": 0.5,
                }
            )
    return records


def expected_limits(defects: list[int], sizes: list[int], p_bar: float) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(sizes, dtype=float)
    half = 3 * np.sqrt(p_bar * (1 - p_bar) / n)
    return np.minimum(1, p_bar + half), np.maximum(0, p_bar - half)


def make_job(database: dbmod.Database, key: str) -> int:
    with database.session() as s:
        job = Job(key=key, name="inspect", input_uri="/images", output_uri="/out.parquet")
        s.add(job)
        s.flush()
        return job.id


def n_predictions(database: dbmod.Database) -> int:
    with database.session() as s:
        return s.scalar(select(func.count()).select_from(Prediction))


def test_p_chart_matches_hand_computation_and_flags_the_spike(database: dbmod.Database) -> None:
    defects = [2, 3, 2, 1, 3, 2, 15, 2, 3, 2, 1, 2]
    sizes = [40 + 5 * (i % 4) for i in range(12)]  # varying n, hence varying limits
    assert store_inspections(pd.DataFrame(hourly(defects, sizes)), db=database, line="L1") == sum(sizes)

    chart = p_chart(db=database, line="L1", freq="1h")

    pts = chart.points
    assert list(pts.columns) == POINT_COLUMNS
    assert list(pts["bucket_start"]) == [pd.Timestamp(T0) + pd.Timedelta(hours=i) for i in range(12)]
    assert pts["n"].tolist() == sizes and pts["defects"].tolist() == defects
    np.testing.assert_allclose(pts["p"], np.array(defects) / np.array(sizes))
    p_bar = sum(defects) / sum(sizes)
    assert chart.p_bar == pytest.approx(p_bar)
    ucl, lcl = expected_limits(defects, sizes, p_bar)
    np.testing.assert_allclose(pts["ucl"], ucl)
    np.testing.assert_allclose(pts["lcl"], lcl)
    assert pts["ucl"].nunique() == 4  # one limit per sample size
    assert pts["out_of_control"].tolist() == [i == 6 for i in range(12)]
    assert not pts["run_rule"].any()
    assert chart.signals["bucket_start"].tolist() == [pd.Timestamp(T0) + pd.Timedelta(hours=6)]
    assert "charted data" in chart.baseline and chart.limits is None

    doc = json.loads(json.dumps(chart.to_dict()))
    assert doc["p_bar"] == pytest.approx(p_bar) and len(doc["points"]) == 12
    assert doc["points"][6] == {
        "bucket_start": (T0 + timedelta(hours=6)).isoformat(),
        "n": sizes[6],
        "defects": 15,
        "p": pytest.approx(15 / sizes[6]),
        "ucl": pytest.approx(ucl[6]),
        "lcl": pytest.approx(lcl[6]),
        "out_of_control": True,
        "run_rule": False,
    }

    # Coarser buckets and a window: [08:00, 12:00) in 2-hour buckets holds hours 2..5.
    two = p_chart(db=database, line="L1", freq="2h", start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=6))
    assert two.points["n"].tolist() == [sizes[2] + sizes[3], sizes[4] + sizes[5]]
    assert two.points["defects"].tolist() == [defects[2] + defects[3], defects[4] + defects[5]]
    assert two.p_bar == pytest.approx(sum(defects[2:6]) / sum(sizes[2:6]))
    # Other lines are not mixed in.
    assert p_chart(db=database, line="other").points.empty


def test_run_rule_fires_on_the_eighth_bucket_above_the_centre_line(database: dbmod.Database) -> None:
    # 2 below, 9 above (each well inside the 3-sigma limits), 1 below; p-bar = 48/1200 = 0.04.
    defects = [1, 1] + [5] * 9 + [1]
    sizes = [100] * 12
    store_inspections(hourly(defects, sizes), db=database, line="L2")

    chart = p_chart(db=database, line="L2")

    assert chart.p_bar == pytest.approx(0.04)
    assert not chart.points["out_of_control"].any()
    assert chart.points["run_rule"].tolist() == [False] * 9 + [True, True, False]


def test_store_is_idempotent_per_job_and_statistics_count_each_image_once(database: dbmod.Database) -> None:
    records = hourly([3, 1], [20, 20], prefix="j")
    job = make_job(database, "job-a")

    assert store_inspections(records, db=database, line="L3", job_id=job) == 40
    assert store_inspections(records, db=database, line="L3", job_id=job) == 0  # a re-run writes nothing
    extra = hourly([1], [5], start=T0 + timedelta(hours=2), prefix="k")
    assert store_inspections(records + extra, db=database, line="L3", job_id=job) == 5  # only what is new
    assert n_predictions(database) == 45

    # A second job re-inspects the first bucket and finds every image good: its verdicts win,
    # and no image counts twice.
    later = [
        dict(r, verdict="good", defect_type=None, inspected_at=r["inspected_at"] + timedelta(minutes=1))
        for r in records[:20]
    ]
    other = make_job(database, "job-b")
    assert store_inspections(later, db=database, line="L3", job_id=other) == 20
    assert n_predictions(database) == 65
    summary = defect_rate_summary(db=database, line="L3")
    assert summary["inspected"] == 45 and summary["defects"] == 2  # hour 1's one + hour 2's one
    assert p_chart(db=database, line="L3").points["defects"].tolist() == [0, 1, 1]

    # Without a job there is no idempotence key: every call writes.
    assert store_inspections(extra, db=database, line="L3") == 5
    assert n_predictions(database) == 70


def test_phase_two_uses_the_stored_limits_not_the_new_data(database: dbmod.Database) -> None:
    base_defects, base_sizes = [2, 1, 3, 2, 2, 1, 3, 2], [100] * 8
    store_inspections(hourly(base_defects, base_sizes, prefix="base"), db=database, line="L4")
    start2 = T0 + timedelta(hours=8)
    new_defects, new_sizes = [9, 11, 10, 12], [100] * 4  # the process has drifted to about 10 %
    store_inspections(hourly(new_defects, new_sizes, start=start2, prefix="new"), db=database, line="L4")

    limits = set_control_limits(db=database, line="L4", start=T0, end=start2, by="qa-lead")

    assert limits.p_bar == pytest.approx(sum(base_defects) / 800) and limits.n_baseline == 800
    assert limits.baseline_start == T0 and limits.baseline_end == start2 and limits.created_by == "qa-lead"
    assert control_limits(db=database, line="L4") == limits
    assert control_limits(db=database, line="L5") is None

    phase2 = p_chart(db=database, line="L4", start=start2, limits="stored")
    assert phase2.p_bar == pytest.approx(0.02) and phase2.limits == limits
    assert f"#{limits.id}" in phase2.baseline and "qa-lead" in phase2.baseline
    ucl, lcl = expected_limits(new_defects, new_sizes, 0.02)
    np.testing.assert_allclose(phase2.points["ucl"], ucl)
    np.testing.assert_allclose(phase2.points["lcl"], lcl)
    assert phase2.points["out_of_control"].all()  # the drift shows against the baseline ...
    recomputed = p_chart(db=database, line="L4", start=start2)
    assert recomputed.p_bar == pytest.approx(0.105)
    assert not recomputed.points["out_of_control"].any()  # ... and hides against its own mean
    assert json.loads(json.dumps(phase2.to_dict()))["limits"]["id"] == limits.id

    # A newer baseline supersedes the older; the action is in the audit log.
    newer = set_control_limits(db=database, line="L4", start=T0, end=start2 + timedelta(hours=4))
    assert newer.id > limits.id and control_limits(db=database, line="L4") == newer
    assert p_chart(db=database, line="L4", limits="stored").p_bar == pytest.approx(newer.p_bar)
    assert p_chart(db=database, line="L4", limits=limits).p_bar == pytest.approx(0.02)
    with database.session() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "manufacturing.control_limits")).all()
    assert [e.details["limits_id"] for e in events] == [limits.id, newer.id]
    assert events[0].actor == "qa-lead" and events[0].target == "L4"


def test_empty_database(database: dbmod.Database) -> None:
    chart = p_chart(db=database, line="L6", freq="15min")
    assert chart.points.empty and list(chart.points.columns) == POINT_COLUMNS and chart.p_bar is None
    assert json.loads(json.dumps(chart.to_dict()))["points"] == []
    frame = recent_inspections(db=database)
    assert frame.empty and list(frame.columns) == INSPECTION_COLUMNS
    assert defect_rate_summary(db=database) == {
        "line": None,
        "inspected": 0,
        "defects": 0,
        "good": 0,
        "rate": None,
        "by_defect_type": {},
        "first_inspected_at": None,
        "last_inspected_at": None,
    }
    assert control_limits(db=database, line="L6") is None
    with pytest.raises(ValueError, match=r"line 'L6'.*2024-03-04T06:00:00\+00:00.*2024-03-05T06:00:00\+00:00"):
        set_control_limits(db=database, line="L6", start=T0, end=T0 + timedelta(days=1))
    with pytest.raises(ControlLimitsError, match="set_control_limits"):
        p_chart(db=database, line="L6", limits="stored")
    # Stored limits with nothing (yet) to chart: the centre line is known, the points are not.
    store_inspections(hourly([1], [10]), db=database, line="L6")
    set_control_limits(db=database, line="L6", start=T0, end=T0 + timedelta(hours=1))
    later = p_chart(db=database, line="L6", start=T0 + timedelta(days=1), limits="stored")
    assert later.points.empty and later.p_bar == pytest.approx(0.1)


def test_recent_inspections_and_summary(database: dbmod.Database) -> None:
    store_inspections(hourly([2, 1], [6, 6], prefix="a"), db=database, line="A", model_version_id=None)
    store_inspections(hourly([3], [4], start=T0 + timedelta(minutes=30), prefix="b"), db=database, line="B")

    frame = recent_inspections(db=database, limit=5)
    assert list(frame.columns) == INSPECTION_COLUMNS and len(frame) == 5
    assert frame["inspected_at"].is_monotonic_decreasing and str(frame["inspected_at"].dt.tz) == "UTC"
    assert frame.iloc[0]["image_id"] == "a-01-005"  # 06:00 + 1 h + 5 * 600 s, the newest
    only_b = recent_inspections(db=database, line="B", limit=50)
    assert len(only_b) == 4 and set(only_b["line"]) == {"B"}
    first = only_b[only_b["image_id"] == "b-00-000"].iloc[0]
    assert first["verdict"] == "defect" and first["defect_type"] == "scratch"
    assert first["overlay"] == "/overlays/b-0-0.png" and first["score"] == pytest.approx(0.9)
    assert first["inspected_at"] == pd.Timestamp(T0 + timedelta(minutes=30))
    assert pd.isna(first["job_id"]) and first["prediction_id"] > 0

    summary = defect_rate_summary(db=database)
    assert summary["inspected"] == 16 and summary["defects"] == 6 and summary["good"] == 10
    assert summary["rate"] == pytest.approx(6 / 16)
    assert summary["by_defect_type"] == {"scratch": 3, "dent": 2, "stain": 1}
    assert summary["first_inspected_at"] == T0.isoformat()
    a = defect_rate_summary(db=database, line="A")
    assert (a["inspected"], a["defects"], a["by_defect_type"]) == (12, 3, {"scratch": 2, "dent": 1})
    json.dumps(summary)


def test_times_are_utc_and_bad_records_write_nothing(database: dbmod.Database) -> None:
    cet = timezone(timedelta(hours=1))
    store_inspections(
        [
            {
                "image_id": "x1",
                "score": 0.8,
                "verdict": "defect",
                "inspected_at": datetime(2024, 3, 4, 7, 30, tzinfo=cet),
            },
            {"image_id": "x2", "score": 0.2, "verdict": "good", "inspected_at": "2024-03-04T06:45:00"},  # naive: UTC
            {"image_id": "x3", "score": 0.3, "verdict": "good"},  # now
        ],
        db=database,
        line="tz",
    )
    chart = p_chart(db=database, line="tz", end=T0 + timedelta(hours=1))
    assert chart.points[["n", "defects"]].values.tolist() == [[2, 1]]
    assert chart.points["bucket_start"].iloc[0] == pd.Timestamp(T0)
    newest = recent_inspections(db=database, line="tz", limit=1).iloc[0]
    assert newest["image_id"] == "x3"
    assert abs(newest["inspected_at"] - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(minutes=5)

    before = n_predictions(database)
    bad = [{"image_id": "y1", "score": 0.4, "verdict": "good"}, {"image_id": "y2", "score": 0.6, "verdict": "bad"}]
    with pytest.raises(InputValidationError, match=r"record 1 \(y2\).*verdict"):
        store_inspections(bad, db=database, line="tz")
    with pytest.raises(InputValidationError, match=r"record 0.*'score'"):
        store_inspections([{"image_id": "y3", "verdict": "good"}], db=database, line="tz")
    with pytest.raises(InputValidationError, match="inspected_at"):
        store_inspections(
            [{"image_id": "y4", "score": 0.1, "verdict": "good", "inspected_at": "yesterday-ish"}],
            db=database,
            line="tz",
        )
    assert n_predictions(database) == before


def test_arguments_are_checked() -> None:
    with pytest.raises(InputValidationError, match="offset alias"):
        p_chart(line="any", freq="fortnightly")
    with pytest.raises(InputValidationError, match=r"\[0, 1\]"):
        p_chart(line="any", limits=1.5)
    with pytest.raises(InputValidationError, match="end after it starts"):
        set_control_limits(line="any", start=T0, end=T0)
    with pytest.raises(InputValidationError, match="limit"):
        recent_inspections(limit=0)


def test_p_chart_points_edge_cases() -> None:
    counts = pd.DataFrame(
        {"bucket_start": pd.date_range(T0, periods=3, freq="h"), "n": [10, 10, 10], "defects": [0, 0, 0]}
    )
    flat = p_chart_points(counts, 0.0)  # a perfect line: zero-width limits, nothing flagged
    assert flat["ucl"].tolist() == [0.0] * 3 and not flat["out_of_control"].any() and not flat["run_rule"].any()
    on_centre = p_chart_points(counts.assign(n=[10] * 3, defects=[1] * 3), 0.1, run_length=2)
    assert not on_centre["run_rule"].any()  # points on the centre line belong to no run
    capped = p_chart_points(counts.assign(n=[1, 1, 1], defects=[1, 0, 1]), 0.5)
    assert capped["ucl"].tolist() == [1.0] * 3 and capped["lcl"].tolist() == [0.0] * 3  # clipped to [0, 1]
    assert not capped["out_of_control"].any()
    with pytest.raises(InputValidationError, match="n > 0"):
        p_chart_points(counts.assign(n=[0, 1, 1]), 0.5)


def test_recent_inspections_use_none_for_missing_text(database: dbmod.Database) -> None:
    store_inspections(
        [
            {"image_id": "a.png", "score": 0.9, "verdict": "defect", "defect_type": "crack", "overlay": "a.ov.png"},
            {"image_id": "b.png", "score": 0.1, "verdict": "good", "defect_type": float("nan")},
        ],
        db=database,
        line="L",
    )
    frame = recent_inspections(db=database, line="L").set_index("image_id")
    assert frame.loc["b.png", "defect_type"] is None and frame.loc["b.png", "overlay"] is None
    assert frame.loc["a.png", "defect_type"] == "crack" and frame.loc["a.png", "overlay"] == "a.ov.png"
