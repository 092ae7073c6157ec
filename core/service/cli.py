"""``trillium serve`` and ``trillium keys create|list|revoke``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from trillium.core.errors import TrilliumError

__all__ = ["keys_app", "serve_cmd"]

console = Console(stderr=True)
out = Console()
keys_app = typer.Typer(help="API keys of the HTTP service: make (shown once), list, revoke.", no_args_is_help=True)


def _fail(exc: Exception) -> None:
    from trillium.core.cli import fail

    fail(exc)


def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(min(os.cpu_count() or 1, 4), help="Worker processes sharing the port "
                                "(default: the CPU count, at most 4). Above 1, finance's online state is in Redis."),
    fields: str = typer.Option("", help="Comma-separated fields to serve (default: every installed one)."),
    redis_url: str = typer.Option("", envvar="TRILLIUM_REDIS_URL",
                                  help="Redis for the shared online state (default with several workers: "
                                       "redis://127.0.0.1:6379/0)."),
    max_inflight: int = typer.Option(256, help="Requests one worker holds at once; past it, 503 + Retry-After."),
    reload_seconds: float = typer.Option(2.0, help="How often workers look whether a model's alias moved."),
    max_batch: int = typer.Option(64, help="Most requests per model call of the dynamic batcher (1: no batching)."),
    batch_delay_ms: float = typer.Option(1.0, help="Longest a batch waits for more requests after its first."),
    batcher: str = typer.Option("async", help="Where batches run for routes that do not choose: async (the event "
                                "loop's thread; measured best for finance) or thread (a thread per model)."),
    device: str = typer.Option("cpu", envvar="TRILLIUM_DEVICE",
                               help="Where the models run: cpu, cuda, cuda:N or auto (CUDA when torch sees a GPU). "
                                    "Each worker loads its own copy there; /readyz names each model's backends."),
    log_level: str = typer.Option("warning", help="uvicorn's log level."),
) -> None:
    """Serve every field's models over HTTP (OpenAPI docs at /docs) until SIGINT or SIGTERM."""
    from trillium.core.service.server import serve
    from trillium.core.service.settings import ServiceSettings

    device = device.strip().lower() or "cpu"
    if device != "cpu":  # (torch is imported only then) a GPU asked for and absent fails here, not in every worker
        from trillium.core.runtime.hardware import inference_device

        try:
            device = inference_device(device)
        except TrilliumError as exc:
            _fail(exc)
            return
    os.environ["TRILLIUM_DEVICE"] = device  # the workers (fresh interpreters) load their models there

    settings = ServiceSettings(fields=fields, workers=workers, redis_url=redis_url, max_inflight=max_inflight,
                               reload_seconds=reload_seconds, max_batch=max_batch, batch_delay_ms=batch_delay_ms,
                               batcher=batcher)
    console.print(f"serving on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''}, models on {device}); "
                  f"API docs at http://{host}:{port}/docs")
    try:
        serve(settings, host=host, port=port, log_level=log_level)
    except TrilliumError as exc:
        _fail(exc)


@keys_app.command("create")
def keys_create(
    owner: str = typer.Option(..., help="Who the key acts for (a user or a calling system); audit rows name it."),
    scope: list[str] = typer.Option([], "--scope", help="A scope (<field>:read, <field>:write, admin); repeatable."),
    role: str | None = typer.Option(None, help="Grant a role's scopes (trillium keys roles lists them)."),
    description: str = typer.Option("", help="What the key is for."),
    key_file: Path | None = typer.Option(None, help="Write the key to this file (mode 600) instead of stdout."),
) -> None:
    """Make a key. It is shown once (or written to --key-file); only its hash is stored."""
    from trillium.core.access import create_key
    from trillium.core.db import _whoami, connect

    try:
        key, info = create_key(connect(), owner, scopes=scope, role=role, description=description,
                               created_by=_whoami())
    except TrilliumError as exc:
        _fail(exc)
        return
    if key_file:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        console.print(f"key {info.key_id} for {info.owner} ({', '.join(sorted(info.scopes))}) written to {key_file}")
    else:
        console.print(f"key {info.key_id} for {info.owner} ({', '.join(sorted(info.scopes))}); "
                      "shown once, store it now:")
        out.print(key, soft_wrap=True, highlight=False)


@keys_app.command("list")
def keys_list(
    revoked: bool = typer.Option(False, "--revoked", help="Include revoked keys."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The keys: id, owner, scopes, when made and by whom (never a secret)."""
    from trillium.core.access import list_keys
    from trillium.core.db import connect

    rows = list_keys(connect(), include_revoked=revoked)
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="API keys")
    for col in ("id", "owner", "scopes", "created", "by", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["key_id"], r["owner"], ", ".join(r["scopes"]), f"{r['created_at']:%Y-%m-%d %H:%M}",
                      r["created_by"], f"{r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (the part after trl_).")) -> None:
    """Revoke a key; every worker refuses it within its key cache time (5 s by default)."""
    from trillium.core.access import revoke_key
    from trillium.core.db import _whoami, connect

    try:
        revoke_key(connect(), key_id, actor=_whoami())
    except TrilliumError as exc:
        _fail(exc)
        return
    console.print(f"revoked {key_id}")


@keys_app.command("roles")
def keys_roles() -> None:
    """The roles and the scopes each grants."""
    from trillium.core.access import roles

    for role, granted in sorted(roles().items()):
        out.print(f"{role}: {', '.join(granted)}", highlight=False)
