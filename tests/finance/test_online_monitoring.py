"""Drift of online scoring by day (``online_monitoring``): the reservoir is a uniform sample, the
workers' samples merge in proportion to what each scored, and a day whose amounts triple is
flagged when its check runs, through the same ``OnlineBatchScorer`` the service uses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from trillium.core.db import connect
from trillium.core.errors import InputValidationError
from trillium.core.monitoring import store
from trillium.core.registry import ModelRegistry
from trillium.finance.features import FeatureSpec, batch_features
from trillium.finance.fraud_model import FraudModel
from trillium.finance.monitoring import reference_profile
from trillium.finance.online_monitoring import LABEL, OnlineDayCollector, _Reservoir, check_days, read_day
from trillium.finance.pipeline import FraudScorer
from trillium.finance.serving import LocalState, OnlineBatchScorer, ScoreRequest
from trillium.finance.simulate import simulate_transactions


def test_the_reservoir_is_a_uniform_sample_of_the_stream() -> None:
    rng = np.random.default_rng(0)
    res = _Reservoir(2_000, 1, rng)
    values = np.arange(60_000, dtype=np.float32)
    i = 0
    while i < len(values):  # waves of random sizes, as batches come
        n = int(rng.integers(1, 700))
        chunk = values[i:i + n]
        res.add(chunk[:, None], chunk.astype(np.float64), chunk > 30_000)
        i += n
    assert res.seen == 60_000 and res.filled == 2_000
    sample = res.x[:, 0]
    assert len(np.unique(sample)) == 2_000
    # uniform over the whole stream, not the head or the tail
    assert stats.kstest(sample / 60_000, "uniform").pvalue > 0.001
    assert np.array_equal(res.p, res.x[:, 0]) and np.array_equal(res.alerted, res.x[:, 0] > 30_000)


def test_workers_samples_merge_in_proportion_to_what_each_scored(tmp_path) -> None:
    a = OnlineDayCollector("m", root=tmp_path, sample_rows=1_000, flush_seconds=1e9, seed=1)
    b = OnlineDayCollector("m", root=tmp_path, sample_rows=1_000, flush_seconds=1e9, seed=2)
    b.worker = "other-worker"
    day = 86_400 * 17_000
    a.observe(3, np.zeros((9_000, 2), np.float32), np.zeros(9_000), np.zeros(9_000, bool), np.full(9_000, day))
    b.observe(3, np.ones((1_000, 2), np.float32), np.ones(1_000), np.ones(1_000, bool), np.full(1_000, day))
    a.flush(), b.flush()
    folder = tmp_path / "v3" / "2016-07-18"
    assert sorted(p.name for p in folder.iterdir()) == ["other-worker.npz", f"{a.worker}.npz"]
    x, p, alerted, scored = read_day(folder, sample_rows=1_000)
    assert np.array_equal(alerted, p == 1) and np.array_equal(x[:, 0], p)
    assert scored == 10_000 and len(p) == 1_000
    assert p.mean() == pytest.approx(0.1, abs=0.002)  # 1,000 of 10,000 rows were worker b's
    (folder / "junk.npz").write_bytes(b"not numpy")
    with pytest.raises(InputValidationError, match="junk.npz: not an online monitoring sample"):
        read_day(folder)


def test_a_late_row_of_a_day_let_go_continues_its_file(tmp_path) -> None:
    c = OnlineDayCollector("m", root=tmp_path, sample_rows=100, flush_seconds=0, seed=0)
    base = 86_400 * 17_000
    for d in range(5):  # five days: the oldest leave memory once written
        c.observe(1, np.full((10, 1), d, np.float32), np.full(10, d / 10), np.zeros(10, bool), np.full(10, base + d * 86_400))
    assert len(c._res) == 3
    c.observe(1, np.full((5, 1), 9, np.float32), np.ones(5), np.zeros(5, bool), np.full(5, base))
    _, p, _, scored = read_day(tmp_path / "v1" / "2016-07-18")
    assert scored == 15 and sorted(p.tolist()) == [0.0] * 10 + [1.0] * 5


def test_a_sample_that_cannot_be_written_fails_no_request_and_is_written_later(tmp_path, caplog) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the sample's folder should be")
    c = OnlineDayCollector("m", root=blocked, sample_rows=100, flush_seconds=0, seed=0)
    day = 86_400 * 17_000
    c.observe(1, np.ones((4, 1), np.float32), np.ones(4), np.zeros(4, bool), np.full(4, day))  # no exception
    assert "could not be written" in caplog.text
    c.root = tmp_path / "fixed"
    c.observe(1, np.ones((2, 1), np.float32), np.ones(2), np.zeros(2, bool), np.full(2, day))
    _, _, _, scored = read_day(tmp_path / "fixed" / "v1" / "2016-07-18")
    assert scored == 6  # the rows seen while the disk refused them were kept and written


def test_the_service_scorer_feeds_daily_checks_that_flag_a_shifted_day(tmp_path) -> None:
    bank = simulate_transactions(n_customers=200, n_terminals=300, n_days=40, seed=5)
    spec = FeatureSpec(card_history=True)
    x = batch_features(bank, spec)
    y = bank["label"].to_numpy(int)
    day = (bank["timestamp"] - bank["timestamp"].min()).dt.days.to_numpy()
    train, ref = day < 30, day >= 30
    model = FraudModel(kind="gbt", spec=spec, gbt_params={"n_estimators": 30}).fit(x[train], y[train])
    registry = ModelRegistry(connect())
    record = model.register(registry, profile=reference_profile(model, x[ref], None))
    scorer = FraudScorer.from_registry("fraud", registry=registry)

    checked: list[int] = []
    collector = OnlineDayCollector(
        "fraud", root=tmp_path / "online", flush_seconds=0,
        on_flush=lambda closed: checked.extend(check_days("fraud", registry=registry, days=closed,
                                                          root=tmp_path / "online")))
    online = OnlineBatchScorer(LocalState(), observer=collector.observe)
    stream = bank.drop(columns=["label", "fraud_scenario"]).copy()
    third = stream["timestamp"].dt.normalize() == stream["timestamp"].min().normalize() + pd.Timedelta(days=32)
    stream.loc[third, "amount"] = (stream.loc[third, "amount"] * 3).round(2)  # day 32: amounts triple
    stream = stream[day >= 30]
    txs = stream.to_dict("records")
    for i in range(0, len(txs), 50):
        for answer in online.score_requests(scorer, record.version, [ScoreRequest(txs[i:i + 50])]):
            assert not isinstance(answer, Exception), answer
    collector.flush()

    runs = store.runs("fraud", scope="day")
    runs = runs[runs["label"] == LABEL].set_index("day")
    days = sorted(stream["timestamp"].dt.strftime("%Y-%m-%d").unique())
    assert list(runs.index) == days[:-1]  # every day a later day closed; the last is still open
    assert len(checked) == len(runs)
    per_day = stream["timestamp"].dt.strftime("%Y-%m-%d").value_counts()
    for d, run in runs.iterrows():
        assert run["performance"]["rows_scored"] == per_day[d] == run["rows"]  # under 20,000: all kept
    drifted = {d: {c["name"] for c in cols if c["drifted"]} for d, cols in runs["columns"].items()}
    shifted = days[2]
    assert "amount" in drifted[shifted] and "amount" not in drifted[days[0]] | drifted[days[1]]
    assert runs.loc[shifted, "status"] == "act"
    # the CLI-style check of every day with samples includes the open last day
    all_ids = check_days("fraud", registry=registry, root=tmp_path / "online")
    assert len(all_ids) == len(days)


def test_the_monitor_online_command_lists_and_checks_the_sampled_days(trillium_home) -> None:
    from typer.testing import CliRunner

    from trillium.core.cli import app

    r = CliRunner().invoke(app, ["finance", "monitor-online"])
    assert r.exit_code != 0 and "no online samples of 'fraud'" in r.output
    bank = simulate_transactions(n_customers=100, n_terminals=150, n_days=12, seed=6)
    spec = FeatureSpec(card_history=False)
    x = batch_features(bank, spec)
    model = FraudModel(kind="gbt", spec=spec, gbt_params={"n_estimators": 10}).fit(x, bank["label"].to_numpy(int))
    record = model.register(ModelRegistry(connect()), profile=reference_profile(model, x, None))
    collector = OnlineDayCollector("fraud", flush_seconds=1e9)  # under $TRILLIUM_HOME, as the service writes
    secs = (bank["timestamp"] - pd.Timestamp(0)).dt.total_seconds().to_numpy()
    collector.observe(record.version, x, model.predict_proba(x, None), np.zeros(len(x), bool), secs)
    collector.flush()
    r = CliRunner().invoke(app, ["finance", "monitor-online", "--list"])
    assert r.exit_code == 0 and r.output.count(f"      {record.version} ") == 12, r.output
    last = bank["timestamp"].max().strftime("%Y-%m-%d")
    r = CliRunner().invoke(app, ["finance", "monitor-online", "--day", last])
    assert r.exit_code == 0 and r.output.startswith(f"{last} v{record.version}: "), r.output
    assert f"{(bank['timestamp'].dt.strftime('%Y-%m-%d') == last).sum()} scored" in r.output
