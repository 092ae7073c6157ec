"""``trillium finance``: transaction fraud scoring commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from trillium.core.cli_options import address_option, engine_option, max_failed_chunks_option, workers_option

app = typer.Typer(
    help="Credit-card fraud scoring: simulate, train, evaluate, score (batch), alerts, analyst labels, retrain.",
    no_args_is_help=True,
)


def _out() -> Any:
    from rich.console import Console

    return Console()


def _load(data: str, fmt: str) -> Any:
    """Read and validate a transaction file; quarantined rows are reported, never fatal."""
    from trillium.finance.adapters import read_transactions

    valid, quarantined = read_transactions(data, fmt)
    if len(quarantined):
        typer.echo(f"{len(quarantined)} row(s) of {data} quarantined, e.g. row {quarantined.index[0]}: "
                   f"{quarantined['reason'].iloc[0]}", err=True)
    return valid


@app.command("simulate")
def simulate_cmd(
    output: str = typer.Option(..., "--output", "-o", help="File to write: .parquet or .csv (decided by suffix)."),
    customers: int = typer.Option(5000, "--customers", help="Number of customers."),
    terminals: int = typer.Option(10000, "--terminals", help="Number of terminals."),
    days: int = typer.Option(183, "--days", help="Number of simulated days."),
    start: str = typer.Option("2018-04-01", "--start", help="First simulated day (YYYY-MM-DD)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same file."),
    fmt: str = typer.Option("canonical", "--format", help="canonical (trillium columns) or handbook (TX_* columns)."),
) -> None:
    """Simulate card transactions with ground-truth frauds (the Fraud Detection Handbook's process)."""
    import time
    from pathlib import Path

    from trillium.core.cli import fail
    from trillium.core.errors import InputValidationError, TrilliumError
    from trillium.finance.simulate import simulate_transactions, to_handbook

    path = Path(output)
    try:
        suffix = path.suffix.lower()
        if suffix not in (".parquet", ".csv"):
            raise InputValidationError(f"--output {output}: suffix must be .parquet or .csv, got {suffix or 'none'!r}")
        if fmt not in ("canonical", "handbook"):
            raise InputValidationError(f"--format must be canonical or handbook, got {fmt!r}")
        for flag, value, minimum in (("--customers", customers, 1), ("--terminals", terminals, 1),
                                     ("--days", days, 1), ("--seed", seed, 0)):
            if value < minimum:
                raise InputValidationError(f"{flag} must be >= {minimum}, got {value}")
        t0 = time.perf_counter()
        frame = simulate_transactions(customers, terminals, days, start, seed=seed)
        if fmt == "handbook":
            frame = to_handbook(frame)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if suffix == ".parquet":
                frame.to_parquet(path, index=False)
            else:
                frame.to_csv(path, index=False)
        except OSError as exc:
            raise InputValidationError(f"--output {output}: cannot write ({exc.strerror or exc})") from exc
        seconds = time.perf_counter() - t0
    except TrilliumError as exc:
        fail(exc)
        return
    frauds = int(frame["label" if fmt == "canonical" else "TX_FRAUD"].sum())
    rate = frauds / len(frame) if len(frame) else 0.0
    typer.echo(f"{len(frame):,} transactions, {frauds:,} frauds ({rate:.2%}) in {seconds:.1f} s -> {path}")


@app.command("train")
def train_cmd(
    data: str = typer.Option(..., "--data", help="Labelled transactions (.parquet / .csv) in any known format."),
    fmt: str = typer.Option("auto", "--format", help="auto, canonical, handbook or ulb."),
    kind: str = typer.Option("gbt+seq", "--kind", help="Members joined by '+': gbt, mlp, seq."),
    train_days: int = typer.Option(21, "--train-days", help="Days of history to train on."),
    holdout_days: int = typer.Option(7, "--holdout-days", help="Final days held out to measure the model."),
    name: str = typer.Option("fraud", "--name", help="Model name in the registry."),
    autotune: bool = typer.Option(True, help="Measure the runtime backends of the torch members."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a fraud model, measure it on held-out days, register it as NAME:production."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.finance.lifecycle import train_model

    try:
        result = train_model(_load(data, fmt), kind=kind, train_days=train_days, holdout_days=holdout_days,
                             name=name, autotune=autotune, seed=seed)
    except TrilliumError as exc:
        fail(exc)
        return
    m = result.metrics
    typer.echo(f"{name} v{result.record.version} ({result.model.kind}) trained on {m['train_rows']:,} rows "
               f"({m['train_from']} to {m['train_to']}); held out: AUC {m.get('auc_roc', float('nan')):.4f} "
               f"AP {m.get('average_precision', float('nan')):.4f}"
               + (f" CP@100 {m['card_precision_at_100']:.4f}" if "card_precision_at_100" in m else "")
               + (" -> production" if result.promoted else ""))


@app.command("evaluate")
def evaluate_cmd(
    data: str = typer.Option(..., "--data", help="Labelled transactions (.parquet / .csv)."),
    fmt: str = typer.Option("auto", "--format", help="auto, canonical, handbook or ulb."),
    json_out: Path = typer.Option(..., "--json", help="Where to write the report."),
    kind: str = typer.Option("gbt+seq", "--kind", help="The model to test (ignored with --select)."),
    train_start: str = typer.Option("2018-07-25", "--train-start", help="First training day of the first fold."),
    folds: int = typer.Option(4, "--folds", help="Test folds, a week apart (4 = handbook protocol B, 1 = A)."),
    select: str = typer.Option("", "--select",
                               help="Candidate kinds (comma-separated) chosen on the validation folds, e.g. gbt,gbt+seq."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The handbook protocol (card data) or a time-ordered split (ULB); metrics to --json."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.finance.evaluate import evaluate_handbook, evaluate_time_split
    from trillium.finance.formats import ULB_FEATURES

    try:
        frame = _load(data, fmt)
        if "customer_id" in frame.columns:
            report = evaluate_handbook(frame, kind=kind, train_start=train_start, folds=folds, seed=seed,
                                       select=[k for k in select.split(",") if k] or None,
                                       progress=lambda m: typer.echo(m, err=True))
        else:
            passthrough = [c for c in ULB_FEATURES if c in frame.columns]
            report = evaluate_time_split(frame, kind=kind if "seq" not in kind else "gbt+mlp",
                                         passthrough=passthrough, seed=seed,
                                         progress=lambda m: typer.echo(m, err=True))
    except TrilliumError as exc:
        fail(exc)
        return
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=2, default=str))
    line = f"{report['model']}: AUC {report['auc_roc']:.4f}  AP {report['average_precision']:.4f}"
    if "card_precision_at_100" in report:
        line += f"  CP@100 {report['card_precision_at_100']:.4f}"
    typer.echo(f"{line}  ({report.get('protocol_name', report['protocol'])}) -> {json_out}")


@app.command("score")
def score_cmd(
    input_path: str = typer.Option(..., "--input", help="Transactions to score (.parquet / .csv)."),
    output: str = typer.Option(..., "--output", help="A directory of Parquet parts, or a .csv file."),
    fmt: str = typer.Option("auto", "--format"),
    history: str | None = typer.Option(None, "--history", help="Earlier transactions, used as card history only."),
    model: str = typer.Option("fraud:production", "--model", help="NAME:REF (version, alias or latest)."),
    threshold: float | None = typer.Option(None, "--threshold", help="Alert at this probability (overrides the budget)."),
    alerts_per_day: int = typer.Option(100, "--alerts-per-day", help="Daily alert budget."),
    chunk_rows: int = typer.Option(100_000, "--chunk-rows"),
    store: bool = typer.Option(True, help="Store the alerts in the database (the analysts' queue)."),
    reasons: str = typer.Option("alerts", "--reasons", help="Reasons for: alerts, all or none."),
    engine: str = engine_option(),
    address: str | None = address_option(),
    workers: int | None = workers_option(),
    max_failed_chunks: int | None = max_failed_chunks_option(),
) -> None:
    """Batch scoring as a resumable job: quarantine of bad rows, progress, alerts stored."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.core.jobs import check_engine, failed_chunk_limit
    from trillium.finance.batch import score_file
    from trillium.finance.pipeline import FraudScorer

    name, _, ref = model.partition(":")
    try:
        check_engine(engine)  # a missing extra is named before the model is loaded
        scorer = FraudScorer.from_registry(name, ref or "production", threshold=threshold,
                                           alerts_per_day=alerts_per_day)
        res = score_file(scorer, input_path, output, fmt=fmt, history=history, chunk_rows=chunk_rows, store=store,
                         reasons=reasons, engine=engine, address=address, workers=workers,
                         max_failed_chunks=failed_chunk_limit(max_failed_chunks))
    except TrilliumError as exc:
        fail(exc)
        return
    j = res.job
    typer.echo(f"{j.rows_out:,} scored, {j.rows_quarantined:,} quarantined ({j.quarantine}), {res.alerts_stored:,} "
               f"alerts stored; {j.chunks} chunks ({j.chunks_processed} this run) in {j.elapsed_s:.1f} s -> {j.output}")


@app.command("alerts")
def alerts_cmd(
    day: str | None = typer.Option(None, "--day", help="Only this day (YYYY-MM-DD)."),
    budget: int = typer.Option(100, "--budget", help="At most this many alerts per day, highest scores first."),
    limit: int = typer.Option(20, "--limit", help="Rows to print."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the whole queue as JSON."),
) -> None:
    """The analysts' alert queue (unlabelled alerts by score under the daily budget)."""
    import pandas as pd
    from rich.table import Table

    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.finance.store import alert_queue

    try:
        queue = alert_queue(day=day, budget=budget)
    except TrilliumError as exc:
        fail(exc)
        return
    if json_out:
        json_out.write_text(queue.to_json(orient="records", date_format="iso", indent=1))
    from trillium.core.audit import cli_actor
    from trillium.core.db import connect

    # cardholders' transactions were shown (and exported): attributable to the OS account, as in the dashboard
    connect().audit("finance.alerts.view", target=day or "", actor=cli_actor(), alerts=len(queue),
                    shown=min(limit, len(queue)), exported=str(json_out) if json_out else "",
                    transactions=[str(t) for t in queue["transaction_id"].head(200)])
    table = Table("day", "transaction", "card", "amount", "score", "reasons", title=f"{len(queue)} alerts in queue")
    for r in queue.head(limit).itertuples():
        card = "-" if r.customer_id is None or pd.isna(r.customer_id) else str(r.customer_id)
        table.add_row(r.day, r.transaction_id, card, f"{r.amount:,.2f}", f"{r.score:.3f}", r.reasons)
    _out().print(table)


@app.command("monitor-online")
def monitor_online_cmd(
    model: str = typer.Option("fraud", "--model", help="The registered model the service scores with."),
    day: str | None = typer.Option(None, "--day", help="Only this day (YYYY-MM-DD); default: every day sampled."),
    list_only: bool = typer.Option(False, "--list", help="List the sampled days without checking them."),
) -> None:
    """Check the service's days of online scoring for drift (the workers' per-day samples under
    $TRILLIUM_HOME/monitoring/online); each day's run replaces an earlier check of it. The
    service checks a day itself once a later day arrives; run this for the day still open."""
    from trillium.core.cli import fail
    from trillium.core.errors import InputValidationError, TrilliumError
    from trillium.core.monitoring import store
    from trillium.core.registry import ModelRegistry
    from trillium.finance.online_monitoring import check_days, days_frame

    try:
        frame = days_frame(model)
        if day is not None:
            frame = frame[frame["day"] == day]
        if frame.empty:
            raise InputValidationError(f"no online samples of {model!r}" + (f" on {day}" if day else "")
                                       + " (the service writes them while it scores)")
        if list_only:
            typer.echo(frame.to_string(index=False))
            return
        registry = ModelRegistry()
        ids = check_days(model, registry=registry, days=list(zip(frame["version"].astype(int), frame["day"],
                                                                   strict=True)))
    except TrilliumError as exc:
        fail(exc)
        return
    runs = store.runs(model, scope="day")
    for r in runs[runs["run_id"].isin(ids)].itertuples():
        typer.echo(f"{r.day} v{r.version}: {r.status} (max PSI {r.max_psi:.3f}, {r.n_drifted} drifted; "
                   f"{r.performance.get('rows_scored')} scored, {r.rows} sampled)")


@app.command("label")
def label_cmd(
    transaction_id: str = typer.Argument(..., help="The transaction's id."),
    label: str = typer.Argument(..., help="fraud or genuine."),
    comment: str = typer.Option("", "--comment"),
) -> None:
    """Record an analyst's label; retraining learns from it. The analyst is the OS account running
    the command (``cli:<login>``), never a typed name."""
    from trillium.core.audit import cli_actor
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.finance.store import record_feedback

    try:
        fid = record_feedback(transaction_id, label, analyst=cli_actor(), comment=comment)
    except TrilliumError as exc:
        fail(exc)
        return
    typer.echo(f"feedback {fid}: transaction {transaction_id} labelled {label}")


@app.command("retrain")
def retrain_cmd(
    data: str = typer.Option(..., "--data", help="Recent transactions (labels optional: feedback supplies them)."),
    fmt: str = typer.Option("auto", "--format"),
    name: str = typer.Option("fraud", "--name"),
    train_days: int = typer.Option(21, "--train-days"),
    holdout_days: int = typer.Option(7, "--holdout-days"),
    force: bool = typer.Option(False, "--force", help="Promote to production even if not better."),
    autotune: bool = typer.Option(True, help="Measure the runtime backends of the torch members."),
) -> None:
    """Retrain with analyst labels; register a new version; promote it if it is not worse."""
    from trillium.core.cli import fail
    from trillium.core.errors import TrilliumError
    from trillium.finance.lifecycle import retrain

    try:
        result, applied = retrain(_load(data, fmt), name=name, force_promote=force, train_days=train_days,
                                  holdout_days=holdout_days, autotune=autotune)
    except TrilliumError as exc:
        fail(exc)
        return
    m, c = result.metrics, result.compared_with
    vs = f" vs production v{c['version']} AP {c.get('average_precision', float('nan')):.4f}" if c else ""
    typer.echo(f"{name} v{result.record.version}: {applied} analyst labels applied; held-out AP "
               f"{m.get('average_precision', float('nan')):.4f}{vs}; "
               f"{'promoted to production' if result.promoted else 'not promoted'}")
