"""``trillium monitor``: the monitoring report of a model, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from trillium.core.errors import TrilliumError

monitor_app = typer.Typer(help="Model monitoring: drift, data quality, performance, alerts.", no_args_is_help=True)
console = Console(stderr=True)
out = Console()


@monitor_app.command("report")
def report_cmd(
    model: str = typer.Option(..., "--model", help="The registered model's name (e.g. fraud)."),
    since: str | None = typer.Option(None, "--since", help="Only runs and alerts at or after this time "
                                                           "(e.g. 2026-12-01 or 2026-12-01T08:00)."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the whole report as JSON here."),
    last: int = typer.Option(15, help="How many of the latest runs to print."),
) -> None:
    """Drift over time, the columns that moved, data quality, performance and alerts of one model."""
    from trillium.core.cli import fail
    from trillium.core.monitoring.report import build_report

    try:
        rep = build_report(model, since=since)
    except TrilliumError as exc:
        fail(exc)
        return
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rep, indent=1, default=str))
        console.print(f"wrote {json_path}")
    runs = Table(title=f"{model}: the latest {min(last, rep['runs'])} of {rep['runs']} monitoring runs")
    for col in ("run", "version", "scope", "day / job", "rows", "status", "max PSI", "score PSI", "drifted",
                "est. precision"):
        runs.add_column(col)
    for r in rep["timeline"][-last:]:
        perf = r["performance"] or {}
        est = perf.get("estimated_precision")
        runs.add_row(str(r["run_id"]), str(r["version"]), r["scope"], r["day"] or r["label"], str(r["rows"]),
                     r["status"], f"{r['max_psi']:.3f}", "" if r["score_psi"] is None else f"{r['score_psi']:.3f}",
                     ", ".join(r["drifted"][:4]) + (" ..." if len(r["drifted"]) > 4 else ""),
                     "" if est is None else f"{est:.3f} ± {perf.get('standard_error', 0):.3f}")
    out.print(runs)
    moved = [m for m in rep["moved_columns"] if m["runs_drifted"]]
    if moved:
        t = Table(title="columns that moved")
        for col in ("column", "runs drifted", "max PSI", "last PSI"):
            t.add_column(col)
        for m in moved[:10]:
            t.add_row(m["column"], str(m["runs_drifted"]), f"{m['max_psi']:.3f}", f"{m['last_psi']:.3f}")
        out.print(t)
    if rep["live_performance"]:
        t = Table(title="live performance (from labels)")
        keys = [k for k in rep["live_performance"][0] if k not in ("domain",)]
        for k in keys:
            t.add_column(k)
        for row in rep["live_performance"][-10:]:
            t.add_row(*["" if row[k] is None or row[k] != row[k] else
                        (f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k])) for k in keys])
        out.print(t)
    a = Table(title=f"alerts ({len(rep['alerts'])})")
    for col in ("id", "severity", "rule", "message"):
        a.add_column(col)
    for al in rep["alerts"][:10]:
        a.add_row(str(al["alert_id"]), al["severity"], al["rule"], al["message"])
    out.print(a)
