"""Fraud scoring end to end: the online scorer, batch jobs, the alert queue, analyst feedback,
retraining and the ``trillium finance`` commands.

One small ``gbt+seq`` model is trained per module (on the last 21 days of a 60-day
simulation); tests that need the registry register it under their own ``TRILLIUM_HOME``.
Everything that persists runs on SQLite and PostgreSQL (the ``database`` fixture), except the
kill test and the CLI test, which use the default SQLite file.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sqlalchemy import func, select
from typer.testing import CliRunner

from trillium.core import cli as core_cli
from trillium.core.db import AuditEvent, Database, Feedback, Job, JobChunk, Prediction, connect
from trillium.core.errors import InputValidationError
from trillium.core.jobs import read_quarantine
from trillium.core.registry import ModelRegistry
from trillium.finance.batch import read_scores, score_file
from trillium.finance.features import FeatureSpec, batch_features, previous_indices, sequence_tensor
from trillium.finance.fraud_model import FraudModel
from trillium.finance.lifecycle import merge_feedback, retrain
from trillium.finance.pipeline import ALERT, OVER_BUDGET, PASS, FraudScorer, ScoreResult
from trillium.finance.simulate import simulate_transactions
from trillium.finance.store import alert_queue, feedback_labels, record_feedback, store_alerts
from trillium.finance.train import TorchTrainSettings

WORKER = Path(__file__).with_name("_score_worker.py")
HISTORY = {"n_customers": 300, "n_terminals": 600, "n_days": 60}
TRAIN_FROM_DAY = 39  # the model learns the last 21 days, retrain's hold-out week included (see test_retrain)


def _day(frame: pd.DataFrame) -> np.ndarray:
    """Day number of each row since the frame's first day."""
    ts = frame["timestamp"]
    return ((ts - ts.min().normalize()) // pd.Timedelta(days=1)).to_numpy()


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return simulate_transactions(**HISTORY, seed=11)


@pytest.fixture(scope="module")
def model(history: pd.DataFrame) -> FraudModel:
    spec = FeatureSpec()
    x = batch_features(history, spec)
    seq = sequence_tensor(x.astype(np.float32), previous_indices(history, spec.seq_len), spec.seq_indices)
    train = _day(history) >= TRAIN_FROM_DAY
    y = history["label"].to_numpy(dtype=int)
    torch.manual_seed(0)
    return FraudModel(kind="gbt+seq", spec=spec, gbt_params={"n_estimators": 100},
                      torch_settings=TorchTrainSettings(epochs=1)).fit(
        x[train], y[train], seq[train], order=history["timestamp"].to_numpy()[train])


@pytest.fixture(scope="module")
def stream() -> pd.DataFrame:
    """Ten new days of transactions (other cards, other seed), in time order."""
    frame = simulate_transactions(n_customers=100, n_terminals=200, n_days=10, seed=7)
    assert frame["timestamp"].is_monotonic_increasing
    return frame


@pytest.fixture(scope="module")
def online(model: FraudModel, history: pd.DataFrame
           ) -> tuple[FraudScorer, pd.DataFrame, pd.DataFrame, list[ScoreResult]]:
    """The last week of the history scored one transaction at a time under a budget of 3 alerts
    a day, after the state has replayed the 37 days before it (the state horizon).

    Returns (scorer, replayed history, scored days, results).
    """
    day = _day(history)
    before, days = history[(day >= 16) & (day < 53)], history[day >= 53]
    scorer = FraudScorer(model, alerts_per_day=3)
    for tx in before.to_dict("records"):
        scorer.features.update(tx)
    return scorer, before, days, [scorer.score(tx) for tx in days.to_dict("records")]


# ----------------------------------------------------------------------------- real time


def test_online_scores_equal_batch_scores_and_alerts_are_explained(
    model: FraudModel, online: tuple[FraudScorer, pd.DataFrame, pd.DataFrame, list[ScoreResult]]
) -> None:
    scorer, before, days, results = online
    assert [r.transaction_id for r in results] == days["transaction_id"].tolist()
    p = np.array([r.probability for r in results])
    assert ((p >= 0) & (p <= 1)).all()
    assert {r.decision for r in results} <= {ALERT, PASS, OVER_BUDGET}
    # The probabilities mean something: frauds score higher than genuine transactions.
    y = days["label"].to_numpy(dtype=int)
    assert p[y == 1].mean() > 4 * p[y == 0].mean()

    batch = scorer.score_batch(days, history=before)
    assert batch["transaction_id"].tolist() == days["transaction_id"].tolist()
    np.testing.assert_allclose(p, batch["probability"].to_numpy(), rtol=0, atol=1e-6)

    names = model.spec.names
    alerts = [r for r in results if r.decision == ALERT]
    assert alerts
    for r in alerts:
        assert 1 <= len(r.reasons) <= 3
        assert [x.contribution for x in r.reasons] == sorted((x.contribution for x in r.reasons), reverse=True)
        for reason in r.reasons:
            assert reason.feature in names
            # a sentence about the transaction, not a raw "feature = value" dump
            assert reason.text and "_" not in reason.text and "=" not in reason.text, reason
        assert json.loads(json.dumps(r.as_dict()))["reasons"][0]["text"] == r.reasons[0].text
    # by default only what an analyst reviews is explained (alerts and over-budget ones)
    assert all(bool(r.reasons) is (r.decision != PASS) for r in results)


def test_daily_budget_caps_alerts_and_marks_the_rest_over_budget(
    model: FraudModel, stream: pd.DataFrame, online: tuple[FraudScorer, pd.DataFrame, pd.DataFrame, list[ScoreResult]]
) -> None:
    scorer, _, days, results = online
    assert scorer.alerts_per_day == 3
    assert scorer.threshold == model.budget_threshold(3)
    by_day: dict[Any, list[ScoreResult]] = defaultdict(list)
    for day, r in zip(days["timestamp"].dt.date, results, strict=True):
        by_day[day].append(r)
    for rs in by_day.values():
        above = [r.decision for r in rs if r.probability >= scorer.threshold]
        # in arrival order: the first three above the threshold alert, the rest are over budget
        assert above == [ALERT] * min(3, len(above)) + [OVER_BUDGET] * max(0, len(above) - 3)
        assert all(r.decision == PASS for r in rs if r.probability < scorer.threshold)
    assert any(r.decision == OVER_BUDGET for r in results), "no day exceeded the budget: the test proves nothing"

    # A threshold replaces the budget: at 0.0 every transaction alerts, however many a day.
    everything = FraudScorer(model, threshold=0.0, alerts_per_day=3)
    assert everything.alerts_per_day is None and everything.threshold == 0.0
    first = stream.head(300)
    assert first["timestamp"].dt.date.nunique() <= 3
    again = [everything.score(tx, explain=False) for tx in first.to_dict("records")]
    assert [r.decision for r in again] == [ALERT] * len(first)
    assert all(r.reasons == [] and 0 <= r.probability <= 1 for r in again)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": 1.5}, "threshold must be a probability in \\[0, 1\\], got 1.5"),
    ({"threshold": -0.01}, "threshold must be a probability"),
    ({"threshold": None, "alerts_per_day": None}, "give a threshold or a daily alert budget"),
    ({"threshold": None, "alerts_per_day": 0}, "give a threshold or a daily alert budget"),
])
def test_invalid_scorer_arguments_raise(model: FraudModel, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputValidationError, match=message):
        FraudScorer(model, **kwargs)


def test_negative_alert_budget_is_rejected(model: FraudModel) -> None:
    with pytest.raises(InputValidationError, match=r"daily alert budget >= 1 \(alerts_per_day=-3\)"):
        FraudScorer(model, alerts_per_day=-3)


def test_the_same_seed_and_data_give_the_same_model(history: pd.DataFrame) -> None:
    spec = FeatureSpec()
    part = history.head(3000)
    x = batch_features(part, spec)
    seq = sequence_tensor(x.astype(np.float32), previous_indices(part, spec.seq_len), spec.seq_indices)
    y = part["label"].to_numpy(dtype=int)
    a, b = (FraudModel(kind="seq", spec=spec, seed=1, torch_settings=TorchTrainSettings(epochs=1, seed=1))
            .fit(x, y, seq) for _ in range(2))
    np.testing.assert_allclose(a.predict_proba(x, seq), b.predict_proba(x, seq), rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- batch job


BROKEN = {5: ("amount", "12,x"), 300: ("customer_id", ""), 1200: ("timestamp", "2018-04-31 25:61:00")}
DUPLICATE_ROW, FIRST_ROW = 900, 10  # row 900 repeats row 10's transaction id, three chunks later
CHUNK = 250


def _broken_csv(stream: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``stream`` as CSV with four broken rows; returns the rows that are fine."""
    stream.to_csv(path, index=False)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    for row, (column, value) in BROKEN.items():
        raw.loc[row, column] = value
    raw.loc[DUPLICATE_ROW, "transaction_id"] = raw.loc[FIRST_ROW, "transaction_id"]
    raw.to_csv(path, index=False)
    return stream.drop(index=[*BROKEN, DUPLICATE_ROW])


def _finance_predictions(db: Database) -> pd.DataFrame:
    with db.session() as s:
        rows = s.execute(select(Prediction.id, Prediction.entity_id, Prediction.job_id, Prediction.score,
                                Prediction.decision, Prediction.model_version_id, Prediction.details)
                         .where(Prediction.domain == "finance").order_by(Prediction.id)).all()
    return pd.DataFrame(rows, columns=["id", "entity_id", "job_id", "score", "decision", "model_version_id",
                                       "details"])


def test_score_file_quarantines_bad_rows_and_stores_alerts_once(
    database: Database, model: FraudModel, stream: pd.DataFrame, tmp_path: Path
) -> None:
    registry = ModelRegistry(database)
    record = model.register(registry, "fraud")
    scorer = FraudScorer.from_registry("fraud", registry=registry, threshold=0.5)
    src, output = tmp_path / "tx.csv", tmp_path / "scored"
    good = _broken_csv(stream, src)

    res = score_file(scorer, src, output, chunk_rows=CHUNK, db=database, progress=False)

    job = res.job
    assert job.status == "done" and job.chunks == math.ceil(len(stream) / CHUNK)
    assert (job.rows_in, job.rows_out, job.rows_quarantined) == (len(stream), len(good), 4)
    assert sorted(p.name for p in output.glob("part-*.parquet")) == [f"part-{i:05d}.parquet" for i in range(job.chunks)]
    out = read_scores(output)
    assert out["transaction_id"].tolist() == good["transaction_id"].astype(str).tolist()  # each good row once
    expected = scorer.score_batch(good.reset_index(drop=True))
    np.testing.assert_allclose(out["probability"].to_numpy(), expected["probability"].to_numpy(), rtol=0, atol=1e-6)
    assert (out["decision"] == np.where(out["probability"] >= 0.5, ALERT, PASS)).all()

    q = read_quarantine(job.quarantine)
    assert sorted(q["row_index"]) == sorted([*BROKEN, DUPLICATE_ROW])
    assert (q["chunk_index"] == q["row_index"] // CHUNK).all()
    why = dict(zip(q["row_index"], q["reason"], strict=True))
    assert why[5].startswith("bad amount: not a number") and "12,x" in why[5]
    assert why[300] == "missing customer_id"
    assert why[1200].startswith("bad timestamp") and "2018-04-31 25:61:00" in why[1200]
    assert why[DUPLICATE_ROW].startswith("duplicate transaction_id") and f"first at row {FIRST_ROW}" in why[DUPLICATE_ROW]
    assert json.loads(q.set_index("row_index").loc[5, "record"])["amount"] == "12,x"

    alerts = out[out["decision"] == ALERT]
    stored = _finance_predictions(database)
    assert res.alerts_stored == len(alerts) == len(stored) > 0
    assert sorted(stored["entity_id"]) == sorted(alerts["transaction_id"])
    assert set(stored["decision"]) == {ALERT} and set(stored["job_id"]) == {job.job_id}
    assert set(stored["model_version_id"]) == {record.id}
    by_id = alerts.set_index("transaction_id")["probability"]
    np.testing.assert_allclose(stored["score"], by_id.loc[stored["entity_id"]].to_numpy(), rtol=1e-12)
    assert all(d["reasons"] and d["model"] == "fraud:v1" for d in stored["details"])

    # The same job again: nothing rescored, and the alerts are not stored twice.
    again = score_file(scorer, src, output, chunk_rows=CHUNK, db=database, progress=False)
    assert again.job.job_id == job.job_id and again.job.chunks_processed == 0
    assert again.alerts_stored == res.alerts_stored
    after = _finance_predictions(database)
    assert len(after) == len(stored) and not after["entity_id"].duplicated().any()
    assert sorted(after["entity_id"]) == sorted(stored["entity_id"])


def test_score_file_refuses_an_unknown_reasons_mode_before_starting(
    model: FraudModel, stream: pd.DataFrame, tmp_path: Path
) -> None:
    scorer = FraudScorer(model, threshold=0.5)
    src = tmp_path / "tx.csv"
    stream.to_csv(src, index=False)
    with pytest.raises(InputValidationError, match="--reasons 'bogus'"):
        score_file(scorer, src, tmp_path / "scored", progress=False, reasons="bogus")
    with connect().session() as s:  # no job started, nothing quarantined
        assert s.scalar(select(func.count()).select_from(Job)) == 0
    assert not (tmp_path / "scored").exists()


def test_rerunning_a_scoring_job_keeps_feedback_linked_to_its_alert(
    database: Database, model: FraudModel, stream: pd.DataFrame, tmp_path: Path
) -> None:
    src = tmp_path / "tx.parquet"
    stream.to_parquet(src, index=False)
    scorer = FraudScorer(model, threshold=0.5)
    score_file(scorer, src, tmp_path / "scored", chunk_rows=500, db=database, progress=False)
    target = alert_queue(db=database)["transaction_id"].iloc[0]
    record_feedback(target, "fraud", db=database)
    score_file(scorer, src, tmp_path / "scored", chunk_rows=500, db=database, progress=False)
    with database.session() as s:
        linked = s.scalar(select(Prediction.entity_id).join(Feedback, Feedback.prediction_id == Prediction.id))
    assert linked == target


def _checkpoints(db: Database, name: str) -> tuple[str | None, int]:
    with db.engine.connect() as conn:
        job = conn.execute(select(Job.id, Job.status).where(Job.name == name)).first()
        if job is None:
            return None, 0
        done = conn.execute(select(func.count()).select_from(JobChunk).where(JobChunk.job_id == job.id)).scalar_one()
    return job.status, int(done)


def test_score_file_killed_mid_way_resumes_without_loss_or_duplicates(model: FraudModel, tmp_path: Path) -> None:
    db = connect()  # the SQLite file under this test's TRILLIUM_HOME
    registry = ModelRegistry(db)
    model.register(registry, "fraud")
    frame = simulate_transactions(n_customers=1000, n_terminals=2000, n_days=50, seed=5)
    bad = frame.index[frame.index % 9973 == 17].tolist()
    frame.loc[bad, "amount"] = -1.0
    src, output = tmp_path / "big.parquet", tmp_path / "scored"
    frame.to_parquet(src, index=False)
    chunk_rows, threshold = 10_000, 0.9
    n_chunks = math.ceil(len(frame) / chunk_rows)
    assert len(frame) > 90_000 and n_chunks >= 8
    name = f"finance-score:{src.name}"
    cfg = {"db_url": db.url, "model": "fraud", "input": str(src), "output": str(output), "chunk_rows": chunk_rows,
           "threshold": threshold, "sleep": 0.3}

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see conftest.one_thread
    proc = subprocess.Popen([sys.executable, str(WORKER), json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 240
    try:
        while _checkpoints(db, name)[1] < 2:
            assert proc.poll() is None, f"worker exited early: {proc.communicate()[1].decode()[-2000:]}"
            assert time.monotonic() < deadline, "worker made no progress"
            time.sleep(0.02)
    finally:
        proc.kill()  # SIGKILL
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    status, done = _checkpoints(db, name)
    assert status == "running" and 2 <= done < n_chunks
    assert _finance_predictions(db).empty  # alerts are stored only once the job is done

    scorer = FraudScorer.from_registry("fraud", registry=registry, threshold=threshold)
    res = score_file(scorer, src, output, chunk_rows=chunk_rows, db=db, progress=False)

    job = res.job
    assert job.resumed_from_chunk >= done and job.chunks == n_chunks
    assert job.chunks_processed == n_chunks - job.resumed_from_chunk
    out = read_scores(output)
    valid = frame.drop(index=bad)
    assert out["transaction_id"].tolist() == valid["transaction_id"].astype(str).tolist()
    q = read_quarantine(job.quarantine)
    assert sorted(q["row_index"]) == bad
    assert all(r.startswith("bad amount: negative") for r in q["reason"])
    assert (job.rows_in, job.rows_out, job.rows_quarantined) == (len(frame), len(valid), len(bad))
    stored = _finance_predictions(db)
    assert res.alerts_stored == len(stored) == int((out["decision"] == ALERT).sum()) > 0
    assert not stored["entity_id"].duplicated().any()


# ----------------------------------------------------------------------------- queue and feedback


def test_alert_queue_orders_by_score_under_the_budget_and_feedback_is_recorded(
    database: Database, model: FraudModel, stream: pd.DataFrame
) -> None:
    scored = FraudScorer(model, threshold=0.3).score_batch(stream)
    assert store_alerts(scored, db=database) == int((scored["decision"] == ALERT).sum())
    alerts = scored[scored["decision"] == ALERT].assign(day=lambda f: f["timestamp"].dt.date.astype(str))
    budget = 4
    assert (alerts.groupby("day").size() > budget).any(), "no day has more alerts than the budget"

    queue = alert_queue(db=database, budget=budget)
    top = (alerts.sort_values("probability", ascending=False, kind="stable").groupby("day").head(budget))
    assert queue.groupby("day").size().to_dict() == top.groupby("day").size().to_dict()
    for day, rows in queue.groupby("day"):
        assert rows["score"].is_monotonic_decreasing
        assert set(rows["transaction_id"]) == set(top.loc[top["day"] == day, "transaction_id"].astype(str))
    assert queue["day"].is_monotonic_increasing
    assert queue["label"].isna().all() and (queue["reasons"].str.len() > 0).all()

    # Two analysts label three times; the newer label for the same transaction wins.
    first, second = queue["transaction_id"].iloc[0], queue["transaction_id"].iloc[1]
    ids = [record_feedback(first, "genuine", db=database, analyst="ana", comment="known customer"),
           record_feedback(second, "fraud", db=database, analyst="bob"),
           record_feedback(second, "genuine", db=database, analyst="bob", comment="changed my mind")]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert feedback_labels(database).to_dict() == {first: 0, second: 0}
    with database.session() as s:
        rows = s.execute(select(Feedback.id, Feedback.entity_id, Feedback.label, Feedback.analyst,
                                Feedback.prediction_id).order_by(Feedback.id)).all()
        predictions = dict(s.execute(select(Prediction.entity_id, Prediction.id)).all())
        audit = s.execute(select(AuditEvent.action, AuditEvent.target, AuditEvent.actor, AuditEvent.details)
                          .where(AuditEvent.action == "finance.feedback").order_by(AuditEvent.id)).all()
    assert [(r.id, r.entity_id, r.label, r.analyst) for r in rows] == [
        (ids[0], first, "genuine", "ana"), (ids[1], second, "fraud", "bob"), (ids[2], second, "genuine", "bob")]
    assert [r.prediction_id for r in rows] == [predictions[first], predictions[second], predictions[second]]
    assert [(a.target, a.actor, a.details["label"]) for a in audit] == [
        (first, "ana", "genuine"), (second, "bob", "fraud"), (second, "bob", "genuine")]

    # Labelled alerts leave the queue; the next ones under the budget take their place.
    after = alert_queue(db=database, budget=budget)
    assert first not in set(after["transaction_id"]) and second not in set(after["transaction_id"])
    day = queue["day"].iloc[0]
    rest = alerts[(alerts["day"] == day) & ~alerts["transaction_id"].astype(str).isin([first, second])]
    next_best = rest.sort_values("probability", ascending=False).head(budget)["transaction_id"].astype(str)
    assert set(after.loc[after["day"] == day, "transaction_id"]) == set(next_best)
    everything = alert_queue(db=database, budget=budget, include_labelled=True).set_index("transaction_id")
    assert set(everything.index) == set(queue["transaction_id"])
    assert everything.loc[first, "label"] == "genuine" and everything.loc[second, "label"] == "genuine"
    assert set(alert_queue(db=database, budget=budget, day=day)["day"]) == {day}

    with pytest.raises(InputValidationError, match="label must be 'fraud' or 'genuine', got 'maybe'"):
        record_feedback(first, "maybe", db=database)
    with pytest.raises(InputValidationError, match="label must be 'fraud' or 'genuine', got 'Fraud'"):
        record_feedback(first, "Fraud", db=database)
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Feedback)) == 3


def _card_and_later_tx(stream: pd.DataFrame) -> tuple[list[dict[str, Any]], int]:
    """The transactions of a card without fraud that has one more than 8 days after its first,
    and the position of that later transaction."""
    for _, tx in stream.groupby("customer_id", sort=True):
        if tx["label"].sum() == 0:
            later = np.flatnonzero(tx["timestamp"] >= tx["timestamp"].iloc[0] + pd.Timedelta(days=8))
            if len(later):
                return tx.drop(columns=["label"]).to_dict("records"), int(later[0])
    raise AssertionError("no suitable card in the stream")


def test_feedback_given_to_a_live_scorer_reaches_its_online_state(
    database: Database, model: FraudModel, stream: pd.DataFrame
) -> None:
    txs, later = _card_and_later_tx(stream)
    live, unaware = FraudScorer(model, threshold=0.5), FraudScorer(model, threshold=0.5)
    for tx in txs[:later]:
        live.score(tx, explain=False)
        unaware.score(tx, explain=False)
    record_feedback(txs[0]["transaction_id"], "fraud", db=database, scorer=live)
    assert feedback_labels(database).to_dict() == {str(txs[0]["transaction_id"]): 1}

    # The card's transaction a week past the label delay now sees a known fraud on the card.
    seen, _ = live.features.update(txs[later])
    blind, _ = unaware.features.update(txs[later])
    names = model.spec.names
    risk, age = names.index("customer_risk_30d"), names.index("customer_days_since_last_known_fraud")
    assert blind[risk] == 0 and seen[risk] > 0
    assert seen[age] < blind[age]
    # Only what depends on known labels moves (the card's, and its terminal's: they share the label).
    moved = {names[i] for i in np.flatnonzero(seen != blind)}
    assert moved <= {"customer_risk_30d", "customer_days_since_last_known_fraud",
                     *(n for n in names if n.startswith(("terminal_risk_", "terminal_days_since_")))}


def test_feedback_with_the_queue_string_id_reaches_the_live_scorer(
    database: Database, model: FraudModel, stream: pd.DataFrame
) -> None:
    txs, later = _card_and_later_tx(stream)
    live = FraudScorer(model, threshold=0.5)
    for tx in txs[:later]:
        live.score(tx, explain=False)
    record_feedback(str(txs[0]["transaction_id"]), "fraud", db=database, scorer=live)
    seen, _ = live.features.update(txs[later])
    assert seen[model.spec.names.index("customer_risk_30d")] > 0


# ----------------------------------------------------------------------------- retrain


def test_retrain_applies_feedback_and_promotes_only_if_not_worse_unless_forced(
    database: Database, model: FraudModel, history: pd.DataFrame
) -> None:
    registry = ModelRegistry(database)
    v1 = model.register(registry, "fraud")
    assert registry.get("fraud", "production").version == v1.version == 1

    # Analysts flip 12 labels in the training window (days 39-45 of a 60-day file with
    # train_days=7, a 7-day delay and holdout_days=7): 6 frauds called genuine, 6 the reverse.
    day = _day(history)
    window = history[(day >= 39) & (day < 46)]
    frauds = window.loc[window["label"] == 1, "transaction_id"].iloc[:6].tolist()
    genuine = window.loc[window["label"] == 0, "transaction_id"].iloc[::500][:6].tolist()
    for tx in frauds:
        record_feedback(tx, "genuine", db=database, analyst="ana")
    for tx in genuine:
        record_feedback(tx, "fraud", db=database, analyst="ana")
    merged, applied = merge_feedback(history, database)
    assert applied == 12
    flipped = merged.set_index("transaction_id")["label"]
    assert (flipped.loc[frauds] == 0).all() and (flipped.loc[genuine] == 1).all()
    untouched = ~history["transaction_id"].isin(frauds + genuine).to_numpy()
    assert (merged["label"].to_numpy()[untouched] == history["label"].to_numpy(dtype=int)[untouched]).all()

    result, applied = retrain(history, db=database, registry=registry, train_days=7, holdout_days=7, autotune=False)
    assert applied == 12 and result.metrics["feedback_labels_applied"] == 12
    assert result.record.version == 2 and result.record.description == "retrained with 12 analyst labels"
    assert result.metrics["train_from"] == str((history["timestamp"].min().normalize() + pd.Timedelta(days=39)).date())
    # v1 learned the hold-out week itself, so the honest new model cannot match it.
    assert result.compared_with is not None and result.compared_with["version"] == 1
    assert result.metrics["average_precision"] < result.compared_with["average_precision"]
    assert not result.promoted
    assert registry.get("fraud", "production").version == 1
    assert "production" not in registry.get("fraud", 2).aliases
    assert registry.get("fraud", 2).metrics["average_precision"] == result.metrics["average_precision"]

    forced, _ = retrain(history, db=database, registry=registry, train_days=7, holdout_days=7, autotune=False,
                        force_promote=True)
    assert forced.record.version == 3 and forced.promoted
    assert registry.get("fraud", "production").version == 3
    assert forced.metrics["average_precision"] < forced.compared_with["average_precision"]  # promoted anyway
    with database.session() as s:
        audit = s.execute(select(AuditEvent.target, AuditEvent.details).where(AuditEvent.action == "finance.retrain")
                          .order_by(AuditEvent.id)).all()
    assert [(a.target, a.details["promoted"], a.details["feedback_labels"]) for a in audit] == [
        ("fraud:v2", False, 12), ("fraud:v3", True, 12)]


def test_retrain_registers_the_feedback_count(history: pd.DataFrame) -> None:
    db = connect()
    record_feedback(int(history["transaction_id"].iloc[-1]), "fraud", db=db)
    result, _ = retrain(history, db=db, kind="gbt", train_days=7, holdout_days=7, autotune=False)
    assert ModelRegistry(db).get("fraud", result.record.version).metrics.get("feedback_labels_applied") == 1


def test_retrain_with_another_kind_than_production(model: FraudModel, history: pd.DataFrame) -> None:
    db = connect()
    registry = ModelRegistry(db)
    model.register(registry, "fraud")
    result, _ = retrain(history, db=db, registry=registry, kind="gbt", train_days=7, holdout_days=7, autotune=False)
    assert result.compared_with is not None and result.compared_with["version"] == 1


# ----------------------------------------------------------------------------- CLI


def _cli(*args: str) -> Any:
    return CliRunner().invoke(core_cli.app, ["finance", *args])


def test_cli_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_cli.console, "width", 400)  # an error is one line; do not let rich wrap it
    data, scored, queue_json = tmp_path / "tx.parquet", tmp_path / "scored", tmp_path / "queue.json"

    r = _cli("simulate", "--output", str(data), "--customers", "150", "--terminals", "300", "--days", "35",
             "--seed", "4")
    assert r.exit_code == 0, r.output
    frame = pd.read_parquet(data)
    assert f"{len(frame):,} transactions" in r.output and len(frame) > 5000

    r = _cli("train", "--data", str(data), "--no-autotune", "--train-days", "14", "--holdout-days", "7")
    assert r.exit_code == 0, r.output
    assert "fraud v1 (gbt+seq)" in r.output and "-> production" in r.output
    db = connect()
    registry = ModelRegistry(db)
    v1 = registry.get("fraud", "production")
    assert v1.version == 1 and v1.metrics["train_rows"] > 0 and 0 < v1.metrics["average_precision"] <= 1

    r = _cli("score", "--input", str(data), "--output", str(scored), "--alerts-per-day", "5", "--chunk-rows", "2000")
    assert r.exit_code == 0, r.output
    out = read_scores(scored)
    assert out["transaction_id"].tolist() == frame["transaction_id"].astype(str).tolist()
    n_alerts = int((out["decision"] == ALERT).sum())
    assert f"{len(frame):,} scored, 0 quarantined" in r.output and f"{n_alerts:,} alerts stored" in r.output
    stored = _finance_predictions(db)
    assert len(stored) == n_alerts > 0 and set(stored["model_version_id"]) == {v1.id}

    r = _cli("alerts", "--json", str(queue_json), "--budget", "5")
    assert r.exit_code == 0, r.output
    queue = pd.DataFrame(json.loads(queue_json.read_text()))
    from trillium.core.audit import audit_rows, cli_actor

    (shown,) = audit_rows(db, action="finance.alerts.view")  # the export is attributable
    assert shown["actor"] == cli_actor() and shown["details"]["exported"] == str(queue_json)
    assert shown["details"]["transactions"] == [str(t) for t in queue["transaction_id"]]
    assert len(queue) > 0 and queue.groupby("day").size().max() <= 5
    assert set(queue["transaction_id"]) <= set(stored["entity_id"])
    assert all(rows["score"].is_monotonic_decreasing for _, rows in queue.groupby("day"))

    labels = frame.set_index(frame["transaction_id"].astype(str))["label"]
    target = next((t for t in queue["transaction_id"] if labels[t] == 0), queue["transaction_id"].iloc[0])
    r = _cli("label", target, "fraud")
    assert r.exit_code == 0, r.output
    assert f"transaction {target} labelled fraud" in r.output
    # the analyst is the OS account running the command, not a typed name (there is no --analyst)
    (row,) = audit_rows(db, action="finance.feedback")
    assert row["actor"] == cli_actor() and row["target"] == str(target)
    assert _cli("label", target, "fraud", "--analyst", "ana").exit_code != 0
    assert feedback_labels(db).to_dict() == {target: 1}
    r = _cli("alerts", "--json", str(queue_json), "--budget", "5")
    assert r.exit_code == 0 and target not in {q["transaction_id"] for q in json.loads(queue_json.read_text())}

    r = _cli("retrain", "--data", str(data), "--no-autotune", "--train-days", "14", "--holdout-days", "7")
    assert r.exit_code == 0, r.output
    assert "fraud v2: 1 analyst labels applied" in r.output
    v2 = registry.get("fraud", 2)
    assert v2.description == "retrained with 1 analyst labels"
    new_ap, old_ap = (float(x) for x in re.findall(r"AP (\d\.\d{4})", r.output))
    assert f"vs production v1 AP {old_ap:.4f}" in r.output
    promoted = "promoted to production" in r.output
    assert promoted is (registry.get("fraud", "production").version == 2)
    if new_ap != old_ap:  # equal at 4 decimals: either way is right
        assert promoted is (new_ap > old_ap)

    # Expected failures: exit 2, one line, no traceback.
    for args, message in [
        (("score", "--input", str(tmp_path / "missing.parquet"), "--output", str(tmp_path / "o")), "missing.parquet"),
        (("label", target, "maybe"), "label must be 'fraud' or 'genuine', got 'maybe'"),
    ]:
        r = _cli(*args)
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.output
        assert "Traceback" not in r.output
    assert feedback_labels(db).to_dict() == {target: 1}
