"""Monitoring core: PSI, KS / chi-square and Benjamini-Hochberg on known distributions; data
quality rules; profiles stored with a registered version; runs and alerts in the database."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trillium.core.db import Database
from trillium.core.errors import InputValidationError, IntegrityError
from trillium.core.monitoring import store
from trillium.core.monitoring.drift import Thresholds, benjamini_hochberg, bin_shares, compare, psi
from trillium.core.monitoring.performance import estimate_alert_precision
from trillium.core.monitoring.profile import PROFILE_FILE, build_profile
from trillium.core.registry import ModelRegistry


def _frame(n: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(shift, scale, n), "count": rng.poisson(0.2 + shift, n).astype(float),
                         "colour": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])})


def test_psi_by_hand() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    # (0.7 - 0.5) ln(0.7 / 0.5) + (0.3 - 0.5) ln(0.3 / 0.5)
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(0.2 * np.log(1.4) - 0.2 * np.log(0.6), rel=1e-9)
    with pytest.raises(InputValidationError, match="same bins"):
        psi([0.5, 0.5], [1.0])


def test_bins_put_ties_in_the_same_bin_as_the_reference() -> None:
    shares = bin_shares([0.0, 1.0], np.array([0.0, 0.0, 1.0, 2.0]))
    assert shares.tolist() == [0.5, 0.25, 0.25]


def test_benjamini_hochberg_matches_the_hand_computed_q_values() -> None:
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.2, np.nan])
    # sorted p 0.01, 0.03, 0.04, 0.2 -> p*m/rank = 0.04, 0.06, 0.0533, 0.2 -> running min from the top
    assert q[:4] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    assert np.isnan(q[4])


def test_same_distribution_does_not_drift_and_a_shift_does() -> None:
    profile = build_profile(_frame(20_000, 0), score=np.random.default_rng(1).beta(1, 20, 20_000),
                            categorical=["colour"])
    assert json.loads(json.dumps(profile)) == profile  # plain JSON
    same = compare(profile, _frame(5_000, 2), np.random.default_rng(3).beta(1, 20, 5_000))
    assert same.drifted == [] and not same.score.drifted and same.alerts() == []
    assert same.max_psi < 0.02
    assert all(c.pvalue > 1e-3 for c in same.columns)
    moved = compare(profile, _frame(5_000, 4, shift=0.5), np.random.default_rng(5).beta(2, 20, 5_000))
    assert {c.name for c in moved.drifted} == {"x", "count"}
    assert moved.score.drifted
    x = next(c for c in moved.columns if c.name == "x")
    assert x.psi > 0.1 and x.qvalue < 1e-10 and x.test == "ks+chi2"
    assert moved.status() in ("watch", "act")
    rules = {(a["rule"], a["feature"]) for a in moved.alerts()}
    assert ("feature_drift", "x") in rules and ("score_drift", "score") in rules


def test_a_small_batch_is_not_tested() -> None:
    profile = build_profile(_frame(2_000, 0), categorical=["colour"])
    rep = compare(profile, _frame(20, 1, shift=3.0), thresholds=Thresholds(min_rows=50))
    assert rep.drifted == [] and all(c.qvalue is None for c in rep.columns)


def test_quality_rules_missing_out_of_range_unseen() -> None:
    profile = build_profile(_frame(5_000, 0), categorical=["colour"])
    batch = _frame(2_000, 1)
    batch.loc[:299, "x"] = np.nan                 # 15 % missing
    batch.loc[300:399, "count"] = 1e6             # 5 % outside the reference's range
    batch.loc[400:499, "colour"] = "purple"       # 5 % in a category never seen
    rules = {(a["rule"], a["feature"]) for a in compare(profile, batch).alerts()}
    assert {("missing", "x"), ("out_of_range", "count"), ("unseen_category", "colour")} <= rules
    colour = next(c for c in compare(profile, batch).columns if c.name == "colour")
    assert colour.unseen == pytest.approx(0.05) and colour.unseen_values == ["purple"]


def test_calendar_columns_are_left_out_of_one_day_checks() -> None:
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"weekend": (rng.integers(0, 7, 7_000) >= 5).astype(float), "x": rng.normal(size=7_000)})
    profile = build_profile(ref, calendar=["weekend"])
    saturday = pd.DataFrame({"weekend": np.ones(1_000), "x": rng.normal(size=1_000)})
    assert [c.name for c in compare(profile, saturday).drifted] == ["weekend"]
    day = compare(profile, saturday, one_day=True)
    assert [c.name for c in day.columns] == ["x"] and day.drifted == []


def test_profile_errors_name_the_field() -> None:
    with pytest.raises(InputValidationError, match="empty"):
        build_profile(pd.DataFrame({"x": []}))
    with pytest.raises(InputValidationError, match="nope"):
        build_profile(_frame(10, 0), categorical=["nope"])
    profile = build_profile(_frame(100, 0), categorical=["colour"])
    with pytest.raises(InputValidationError, match="colour"):
        compare(profile, _frame(100, 0).drop(columns=["colour"]))


def test_estimated_precision_and_its_error() -> None:
    est = estimate_alert_precision([0.9, 0.5, 0.1, 0.5])
    assert est["estimated_precision"] == pytest.approx(0.5)
    assert est["standard_error"] == pytest.approx(np.sqrt(0.09 + 0.25 + 0.09 + 0.25) / 4)
    assert estimate_alert_precision([])["estimated_precision"] is None
    # the estimate is unbiased for calibrated scores: realised precision over many draws
    rng = np.random.default_rng(0)
    p = rng.beta(5, 2, 400)
    realised = (rng.random((2_000, len(p))) < p).mean(axis=1)
    assert realised.mean() == pytest.approx(estimate_alert_precision(p)["estimated_precision"], abs=0.002)
    assert realised.std() == pytest.approx(estimate_alert_precision(p)["standard_error"], rel=0.1)


def test_profile_is_stored_with_the_version_and_checked(database: Database) -> None:
    registry = ModelRegistry(database)
    profile = build_profile(_frame(3_000, 0), score=np.linspace(0, 1, 3_000), categorical=["colour"])
    rec = registry.register("m", {"w.bin": b"weights"}, profile=profile)
    assert PROFILE_FILE in rec.files
    assert store.load_profile(registry, rec) == profile
    assert store.load_profile(registry, registry.register("bare", {"w.bin": b"x"})) is None
    (rec.directory / PROFILE_FILE).write_text("{}")
    with pytest.raises(IntegrityError, match="modified"):
        store.load_profile(registry, rec)


def test_runs_and_alerts_are_stored_once_per_job_and_day(database: Database) -> None:
    registry = ModelRegistry(database)
    profile = build_profile(_frame(5_000, 0), score=np.random.default_rng(1).beta(1, 20, 5_000),
                            categorical=["colour"])
    rec = registry.register("m", {"w.bin": b"weights"}, profile=profile)
    batch = pd.concat([_frame(1_000, 2), _frame(1_000, 3, shift=1.0)], ignore_index=True)
    score = np.random.default_rng(4).beta(1, 20, 2_000)
    days = np.repeat(pd.to_datetime(["2026-01-01", "2026-01-02"]), 1_000)
    alerted = score > 0.1
    ids = store.check_batch(registry, rec, batch, score, db=database, days=days, alerted=alerted, label="job a")
    assert len(ids) == 3
    runs = store.runs("m", db=database)
    assert runs["scope"].tolist() == ["job", "day", "day"]
    by_day = runs.set_index("day")
    assert by_day.loc["2026-01-01", "status"] == "ok" and by_day.loc["2026-01-02", "status"] == "act"
    perf = runs.iloc[0]["performance"]
    assert perf["alerts"] == int(alerted.sum())
    assert perf["estimated_precision"] == pytest.approx(score[alerted].mean())
    alerts = store.alerts("m", db=database)
    assert set(alerts["day"].dropna()) == {"2026-01-02"}
    assert {"x", "count"} <= set(alerts["feature"])
    # the same job checked again replaces its runs and alerts
    store.check_batch(registry, rec, batch, score, db=database, days=days, alerted=alerted, label="job a")
    assert len(store.runs("m", db=database)) == 3
    again = store.alerts("m", db=database)
    assert len(again) == len(alerts) and again["alert_id"].min() > alerts["alert_id"].max()
    store.acknowledge(int(again.iloc[0]["alert_id"]), by="tester", db=database)
    assert len(store.alerts("m", db=database, open_only=True)) == len(alerts) - 1
    assert store.runs("m", db=database, since="2999-01-01").empty
    with pytest.raises(InputValidationError, match="since"):
        store.runs("m", db=database, since="yesterday-ish")


def test_prometheus_gauges_of_the_latest_runs(database: Database) -> None:
    from trillium.core.monitoring.metrics import render

    assert b"trillium_monitoring_max_psi{" not in render(database)  # nothing stored yet, still answers
    registry = ModelRegistry(database)
    profile = build_profile(_frame(5_000, 0), score=np.random.default_rng(1).beta(1, 20, 5_000),
                            categorical=["colour"])
    rec = registry.register("m", {"w.bin": b"weights"}, profile=profile)
    score = np.random.default_rng(4).beta(1, 20, 1_000)
    store.check_batch(registry, rec, _frame(1_000, 2), score, db=database, label="ok")
    store.check_batch(registry, rec, _frame(1_000, 3, shift=1.0), score, db=database, label="moved",
                      alerted=score > 0.1)
    text = render(database).decode()
    latest = store.runs("m", db=database).iloc[-1]
    assert f'trillium_monitoring_max_psi{{model="m",version="1"}} {latest["max_psi"]}' in text
    assert 'trillium_monitoring_status{model="m",version="1"} 2.0' in text
    n_act = int((store.alerts("m", db=database)["severity"] == "act").sum())
    assert f'trillium_monitoring_open_alerts{{model="m",severity="act"}} {float(n_act)}' in text
    assert 'trillium_monitoring_estimated_precision{model="m",version="1"}' in text


def test_small_batches_merge_tail_bins_so_psi_and_chi2_stay_honest() -> None:
    from trillium.core.monitoring.drift import merge_bins

    shares = [0.01, 0.04, 0.05, 0.1, 0.3, 0.3, 0.1, 0.05, 0.04, 0.01]
    assert merge_bins(shares, 100_000).tolist() == list(range(10))  # a big batch keeps every bin
    groups = merge_bins(shares, 50)
    assert len(groups) < 10 and (np.add.reduceat(np.asarray(shares), groups) * 50 >= 1).all()
    # 30 lots of 50 rows from the reference's own distribution: no false alarm, PSI stays small
    profile = build_profile(_frame(3_000, 0), categorical=["colour"])
    reports = [compare(profile, _frame(50, 100 + i)) for i in range(30)]
    assert sum(bool(r.alerts()) for r in reports) <= 1
    assert sum(r.status() != "ok" for r in reports) <= 1
    # PSI's chance level is about (bins - 1) / rows (0.2 to 0.3 here): no verdict without the test
    assert np.median([r.max_psi for r in reports]) < 0.4
