"""The finance part of ``trillium demo``: simulate a bank, train, evaluate, score, queue alerts.

Everything is synthetic and seeded (no download): ``simulate`` writes about 1 M handbook-style
transactions; the model trains on three weeks and is measured on a held-out week; the
handbook protocol runs one fold (A) on the simulated bank; the last two weeks are scored as a
resumable batch job (with the earlier weeks as card history, and two broken records that are
quarantined); the alerts land in the database as the analysts' queue; one analyst label is
recorded and the real-time scorer streams the next transactions until one alerts, with its
reasons.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from trillium.core.config import home_dir
from trillium.core.db import connect
from trillium.core.registry import ModelRegistry


def finance_demo(console: Console) -> dict[str, Any]:
    from trillium.finance.batch import score_file
    from trillium.finance.evaluate import evaluate_handbook
    from trillium.finance.lifecycle import train_model
    from trillium.finance.pipeline import FraudScorer
    from trillium.finance.simulate import simulate_transactions
    from trillium.finance.store import alert_queue, record_feedback

    t0 = time.perf_counter()
    db = connect()
    work = home_dir() / "demo" / "finance"
    work.mkdir(parents=True, exist_ok=True)
    with console.status("finance: simulating transactions"):
        sim = simulate_transactions(n_customers=5000, n_terminals=10000, n_days=112, start_date="2018-04-01", seed=7)
        sim_path = work / "transactions.parquet"
        sim.to_parquet(sim_path, index=False)
    console.print(f"finance: simulated {len(sim):,} transactions, {int(sim['label'].sum()):,} frauds -> {sim_path}")

    cut = pd.Timestamp("2018-07-08")  # the last 14 days are scored, the rest is history
    history = sim[sim["timestamp"] < cut]
    with console.status("finance: training gbt+seq on 21 days, measuring on a held-out week, autotuning"):
        result = train_model(history, kind="gbt+seq", train_days=21, holdout_days=7, registry=ModelRegistry(db),
                             name="fraud", autotune=True)
    m = result.metrics
    console.print(f"finance: registered fraud v{result.record.version} (production): held-out AUC "
                  f"{m['auc_roc']:.3f}, AP {m['average_precision']:.3f}, CP@100 {m['card_precision_at_100']:.3f}")

    with console.status("finance: handbook protocol A (one fold) on the simulated bank"):
        evaluation = evaluate_handbook(history, kind="gbt", train_start="2018-06-01", folds=1)
    console.print(f"finance: protocol A fold 2018-06-01 (gbt): AUC {evaluation['auc_roc']:.3f}, "
                  f"AP {evaluation['average_precision']:.3f}, CP@100 {evaluation['card_precision_at_100']:.3f}")

    to_score = sim[sim["timestamp"] >= cut].drop(columns=["label", "fraud_scenario"]).astype({"amount": object})
    to_score.iloc[3, to_score.columns.get_loc("amount")] = "n/a"
    to_score.iloc[11, to_score.columns.get_loc("customer_id")] = None
    score_path = work / "to_score.csv"
    to_score.to_csv(score_path, index=False)
    hist_path = work / "history.parquet"
    history.drop(columns=["fraud_scenario"]).to_parquet(hist_path, index=False)  # past labels are known
    scorer = FraudScorer.from_registry("fraud", "production", registry=ModelRegistry(db), alerts_per_day=100)
    with console.status("finance: scoring the last 14 days as a batch job"):
        scored = score_file(scorer, score_path, work / f"scores_v{result.record.version}", history=hist_path,
                            chunk_rows=50_000, db=db, progress=False)
    job = scored.job
    console.print(f"finance: batch job scored {job.rows_out:,}, quarantined {job.rows_quarantined} "
                  f"({job.quarantine}), stored {scored.alerts_stored:,} alerts")

    # Monitoring: the job above was checked against the model's reference profile (one run for the
    # job, one per day). One more day arrives with every amount 1.5 times higher (prices moved,
    # the model did not): checked as a batch, it raises the drift alerts the Monitoring page shows.
    from trillium.finance.monitoring import monitor_batch

    last = cut + pd.Timedelta(days=13)
    shifted = sim[sim["timestamp"] >= last].drop(columns=["label", "fraud_scenario"]).copy()
    shifted["amount"] = (shifted["amount"] * 1.5).round(2)
    monitor_batch(scorer, shifted, history=sim[sim["timestamp"] < last].drop(columns=["fraud_scenario"]),
                  label="demo: a day with amounts x1.5", db=db)
    from trillium.core.monitoring.store import alerts as monitoring_alerts

    drift_alerts = monitoring_alerts("fraud", db=db)
    console.print(f"finance: monitoring stored {len(drift_alerts)} alert(s); the shifted day's: "
                  + "; ".join(drift_alerts[drift_alerts["scope"] == "batch"]["message"].head(2)))

    queue = alert_queue(db=db, budget=100)
    top = queue.iloc[0]
    truth = sim.set_index(sim["transaction_id"].astype(str))["label"]
    label = "fraud" if int(truth.get(str(top["transaction_id"]), 0)) == 1 else "genuine"
    record_feedback(top["transaction_id"], label, db=db, analyst="demo", comment="from the demo")
    precision = float(truth.reindex(queue["transaction_id"].astype(str)).fillna(0).mean()) if len(queue) else 0.0

    live = FraudScorer.from_registry("fraud", "production", registry=ModelRegistry(db), alerts_per_day=100)
    for row in history[history["timestamp"] >= cut - pd.Timedelta(days=37)].to_dict("records"):
        live.features.update(row)
    res = None
    for row in sim[sim["timestamp"] >= cut].drop(columns=["label"]).head(20_000).to_dict("records"):
        res = live.score(row)  # reasons come with alerts
        if res.decision != "pass":
            break
    assert res is not None  # nosec B101 # type narrowing: the loop ran

    table = Table(title="finance demo")
    table.add_column("step")
    table.add_column("result")
    table.add_row("model", f"fraud v{result.record.version} (gbt+seq), held-out AP {m['average_precision']:.3f}")
    table.add_row("batch job", f"{job.rows_in:,} in, {job.rows_out:,} scored, {job.rows_quarantined} quarantined")
    table.add_row("alert queue", f"{len(queue):,} alerts (<= 100/day); {precision:.0%} are true frauds")
    table.add_row("feedback", f"transaction {top['transaction_id']} labelled {label}")
    table.add_row("real time", f"tx {res.transaction_id}: p={res.probability:.3f} {res.decision}; "
                               + "; ".join(r.text for r in res.reasons))
    table.add_row("monitoring", f"{len(drift_alerts)} drift/quality alerts (`trillium monitor report --model fraud`)")
    table.add_row("elapsed", f"{time.perf_counter() - t0:.1f} s")
    console.print(table)
    return {"model_version": result.record.version, "alerts": scored.alerts_stored, "queue": len(queue),
            "queue_precision": precision, "metrics": m, "evaluation": evaluation,
            "monitoring_alerts": len(drift_alerts)}
