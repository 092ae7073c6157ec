"""The ``trillium`` command: core commands plus one sub-command group per domain."""

from __future__ import annotations

import json
import logging
import os
import subprocess  # nosec B404 # our own interpreter, argument lists only
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from trillium.core.access_cli import audit_cmd, users_app
from trillium.core.errors import TrilliumError
from trillium.core.monitoring.cli import monitor_app
from trillium.core.service.cli import keys_app, serve_cmd
from trillium.core.verticals import load_ref, verticals

console = Console(stderr=True)
out = Console()

app = typer.Typer(
    help="Trillium: applied machine learning for finance, medicine and manufacturing on one measured core.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that write JSON reports (speed and accuracy).", no_args_is_help=True)
db_app = typer.Typer(help="The database: migrations and status.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry: versions, aliases, integrity.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.command("audit")(audit_cmd)
app.add_typer(monitor_app, name="monitor")
app.command("serve")(serve_cmd)
for _vertical in verticals():  # each vertical's group, found through the trillium.verticals entry point
    if _vertical.cli:
        app.add_typer(load_ref(_vertical.cli), name=_vertical.name)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def fail(exc: Exception) -> None:
    """Print a Trillium error as one clear line and exit 2 (no traceback for expected errors)."""
    from rich.markup import escape

    # escaped: "trillium[ray]" is no style tag; soft_wrap: one line whatever the terminal's width
    console.print(f"[bold red]error:[/] {escape(' '.join(str(exc).split()))}", soft_wrap=True)
    raise typer.Exit(2)


# ------------------------------------------------------------------ demo / dashboard
@app.command()
def demo(
    home: Path | None = typer.Option(None, help="Data directory (default: TRILLIUM_HOME or ./.trillium)."),
) -> None:
    """Run the end-to-end demo: data, models, scores, all stored in the embedded database."""
    if home:
        os.environ["TRILLIUM_HOME"] = str(home)
    from trillium.core.demo import run_demo

    try:
        run_demo(console)
    except TrilliumError as exc:
        fail(exc)


@app.command()
def dashboard(
    port: int = typer.Option(8501, help="Port to serve on."),
    headless: bool = typer.Option(True, help="Do not open a browser."),
) -> None:
    """Start the Streamlit dashboard on the configured database."""
    from trillium import dashboards

    # Home.py is named for the sidebar's first entry; the viewer toolbar hides Streamlit's
    # developer menu (deploy, rerun settings) that analysts have no use for
    from trillium.core.untrusted import limits

    script = Path(dashboards.__file__).parent / "Home.py"
    # Streamlit refuses uploads past the same limit as every other way in (its unit is MiB)
    upload_mib = max(1, -(-limits().upload_bytes // (1024 * 1024)))
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
           "--server.headless", str(headless).lower(), "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "viewer", "--server.maxUploadSize", str(upload_mib),
           "--client.showSidebarNavigation", "false"]  # the login gate draws the links a user's roles allow
    from trillium.core.users import oidc_config

    try:
        oidc = oidc_config()  # OpenID Connect logins (st.login) when an owner-only oidc.toml is there
    except TrilliumError as exc:
        fail(exc)
    if oidc is not None:
        cmd += ["--secrets.files", str(oidc)]
    # Replace this process with Streamlit's (POSIX): a supervisor's SIGTERM then stops the server
    # itself instead of orphaning a child that keeps the port. Elsewhere, wait for the child.
    if os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        # our own interpreter running streamlit, from an argument list (no shell, no user input in it)
        os.execv(sys.executable, cmd)  # nosec B606 # see above
    raise typer.Exit(subprocess.call(cmd))  # nosec B603 # the same argument list, no shell


# ------------------------------------------------------------------ bench
@bench_app.command("core")
def bench_core_cmd(
    json_path: Path = typer.Option(Path("benchmarks/results/core.json"), "--json", help="Where to write the report."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    batcher: bool = typer.Option(True, help="Include the dynamic-batcher benchmark."),
) -> None:
    """Eager fp32 against the autotuned runtime for a reference MLP and CNN, and the batcher."""
    from trillium.core.bench import bench_core

    with console.status("benchmarking") as status:
        report = bench_core(device=device, progress=lambda m: status.update(f"benchmarking: {m}"), include_batcher=batcher)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    table = Table(title=f"trillium bench core ({report['device']}, peak {report['matmul_peak_gflops']:.0f} GFLOP/s)")
    for col in ("model", "eager p50 ms", "best p50 ms", "speedup", "backend", "batch ratio", "roofline", "max |diff|"):
        table.add_column(col)
    for key in ("mlp", "cnn"):
        r = report[key]
        table.add_row(key, f"{r['eager_p50_ms']:.3f}", f"{r['best_p50_ms']:.3f}", f"{r['speedup_p50']:.2f}x",
                      r["best_backend"], f"{r['throughput_ratio']:.2f}x", f"{r['roofline_fraction']:.1%}",
                      f"{r['max_abs_diff']:.1e}")
    out.print(table)
    if "batcher" in report:
        b = report["batcher"]
        out.print(f"batcher: {b['throughput_ratio']:.1f}x throughput, p50 {b['p50_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms "
                  f"(max_delay {b['max_delay_ms']} ms)")
    for goal, ok in report["goals"].items():
        out.print(f"  {'[green]met[/]' if ok else '[red]missed[/]'}  {goal}")
    out.print(f"report written to {json_path}")


# ------------------------------------------------------------------ db
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all migrations to the configured database."""
    from trillium.core import db

    try:
        d = db.connect(upgrade=False)
        d.upgrade()
        out.print(f"{d.safe_url} at revision {db.current_revision(d.engine)}")
    except TrilliumError as exc:
        fail(exc)


@db_app.command("status")
def db_status() -> None:
    """Show the database URL, its revision and the row count of each table."""
    from sqlalchemy import func, select

    from trillium.core import db
    from trillium.core.db.models import Base

    try:
        d = db.connect()
    except TrilliumError as exc:
        fail(exc)
        return
    out.print(f"url: {d.safe_url}\nrevision: {db.current_revision(d.engine)} (head {db.head_revision()})")
    table = Table("table", "rows")
    with d.session() as s:
        # every table of the schema, so a domain's new table (a later migration) is listed too
        for tbl in Base.metadata.sorted_tables:
            table.add_row(tbl.name, str(s.scalar(select(func.count()).select_from(tbl))))
    out.print(table)


# ------------------------------------------------------------------ models
@models_app.command("list")
def models_list(name: str | None = typer.Argument(None, help="Only this model.")) -> None:
    """List registered model versions with aliases and metrics."""
    from trillium.core.registry import ModelRegistry

    try:
        records = ModelRegistry().list(name)
    except TrilliumError as exc:
        fail(exc)
        return
    # names and aliases are what scripts grep for: they never shrink to an ellipsis on a narrow
    # terminal (CI has 80 columns); the long metrics and backend columns fold instead
    table = Table()
    table.add_column("name", no_wrap=True, min_width=max((len(r.name) for r in records), default=4))
    table.add_column("version", no_wrap=True)
    table.add_column("kind", overflow="fold")
    table.add_column("aliases", no_wrap=True,
                     min_width=max((len(",".join(r.aliases)) for r in records), default=7))
    table.add_column("metrics", overflow="fold")
    table.add_column("backend (1 row / batch)", overflow="fold")
    headline = {"auc_roc": "AUC", "average_precision": "AP", "card_precision_at_100": "CP@100",
                "image_auroc": "image AUROC", "auc": "AUC", "acc": "ACC"}
    for r in records:
        choice = r.autotune.get("choice", {})
        if not choice:  # a model of several members keeps one autotune report per torch member
            choice = next((v.get("choice", {}) for v in r.autotune.values() if isinstance(v, dict)), {})
        sizes = sorted(choice, key=int)
        backend = f"{choice[sizes[0]]} / {choice[sizes[-1]]}" if sizes else "-"
        shown = {headline[k]: v for k, v in r.metrics.items() if k in headline} or dict(list(r.metrics.items())[:3])
        metrics = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
        table.add_row(r.name, str(r.version), r.kind, ",".join(r.aliases), metrics, backend)
    out.print(table)


@models_app.command("show")
def models_show(name: str, ref: str = typer.Argument("latest", help="Version number, alias or 'latest'.")) -> None:
    """Print one version's metadata as JSON (autotune table included)."""
    from dataclasses import asdict

    from trillium.core.registry import ModelRegistry

    try:
        rec = ModelRegistry().get(name, ref)
    except TrilliumError as exc:
        fail(exc)
        return
    data = asdict(rec)
    data["directory"] = str(rec.directory)
    out.print_json(json.dumps(data, default=str))


@models_app.command("alias")
def models_alias(name: str, alias: str, version: int) -> None:
    """Point ALIAS (e.g. production) of model NAME at VERSION."""
    from trillium.core.registry import ModelRegistry

    try:
        rec = ModelRegistry().set_alias(name, alias, version)
    except TrilliumError as exc:
        fail(exc)
        return
    out.print(f"{name}:{alias} -> v{rec.version}")


@models_app.command("verify")
def models_verify(name: str, ref: str = typer.Argument("latest")) -> None:
    """Check the sha256 of every file of a version; exit 2 on a mismatch."""
    from trillium.core.registry import ModelRegistry

    try:
        reg = ModelRegistry()
        rec = reg.get(name, ref)
        reg.verify(rec)
    except TrilliumError as exc:
        fail(exc)
        return
    out.print(f"{name} v{rec.version}: {len(rec.files)} files verified")


if __name__ == "__main__":  # pragma: no cover
    app()
