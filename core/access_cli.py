"""``trillium users add|passwd|disable|list|grant`` and ``trillium audit``.

Passwords come from a hidden prompt (typed twice), an environment variable (``--password-env
NAME``) or a file readable only by its owner (``--password-file PATH``), never from the command
line itself, which every user of the machine can read (``ps``) and shells keep in their history.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from trillium.core.errors import TrilliumError

__all__ = ["audit_cmd", "users_app"]

console = Console(stderr=True)
out = Console()
users_app = typer.Typer(help="Dashboard accounts: add, set a password, disable, grant roles, list.",
                        no_args_is_help=True)

_PW_ENV = typer.Option(None, "--password-env", help="Read the password from this environment variable.")
_PW_FILE = typer.Option(None, "--password-file", help="Read the password from this file (mode 600: owner only).")


def _fail(exc: Exception) -> None:
    from trillium.core.cli import fail

    fail(exc)


def _password(env: str | None, file: Path | None) -> str:
    from trillium.core.users import read_secret

    secret = read_secret(env=env, file=file)
    if secret is None:
        secret = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return secret


def _db() -> Any:
    """The database; when it is unreachable, one clear line (no traceback, no password) and exit 2."""
    from trillium.core.db import connect


    try:
        return connect()
    except TrilliumError as exc:
        _fail(exc)


def _actor() -> str:
    from trillium.core.audit import cli_actor

    return cli_actor()


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="The login name."),
    role: list[str] = typer.Option(..., "--role", help="A role (trillium keys roles lists them); repeatable."),
    password_env: str | None = _PW_ENV,
    password_file: Path | None = _PW_FILE,
) -> None:
    """Make a built-in account with its roles."""
    from trillium.core.users import add_user

    try:
        info = add_user(_db(), name, _password(password_env, password_file), role, actor=_actor())
    except TrilliumError as exc:
        _fail(exc)
        return
    console.print(f"user {info.name} added ({', '.join(info.roles)})")


@users_app.command("passwd")
def users_passwd(
    name: str = typer.Argument(..., help="The login name."),
    password_env: str | None = _PW_ENV,
    password_file: Path | None = _PW_FILE,
) -> None:
    """Set a new password (this also lifts a lock-out)."""
    from trillium.core.users import set_password

    try:
        set_password(_db(), name, _password(password_env, password_file), actor=_actor())
    except TrilliumError as exc:
        _fail(exc)
        return
    console.print(f"password of {name} changed")


@users_app.command("disable")
def users_disable(
    name: str = typer.Argument(..., help="The login name."),
    enable: bool = typer.Option(False, "--enable", help="Re-enable a disabled account instead."),
) -> None:
    """Disable an account (it keeps its row and audit history), or re-enable it."""
    from trillium.core.users import disable_user

    try:
        disable_user(_db(), name, actor=_actor(), enable=enable)
    except TrilliumError as exc:
        _fail(exc)
        return
    console.print(f"{name} {'enabled' if enable else 'disabled'}")


@users_app.command("grant")
def users_grant(
    name: str = typer.Argument(..., help="The login name."),
    role: list[str] = typer.Argument(None, help="Roles to add."),
    revoke: list[str] = typer.Option([], "--revoke", help="A role to take away; repeatable."),
) -> None:
    """Add roles to an account (and take others away with --revoke)."""
    from trillium.core.users import grant_roles

    if not role and not revoke:
        _fail(TrilliumError("name at least one role to grant, or --revoke ROLE"))
    try:
        info = grant_roles(_db(), name, list(role or []), remove=revoke, actor=_actor())
    except TrilliumError as exc:
        _fail(exc)
        return
    console.print(f"{info.name}: {', '.join(info.roles) or 'no role'}")


@users_app.command("list")
def users_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The accounts: roles, source (local or oidc), state, last login (never a hash)."""
    from trillium.core.users import list_users

    rows = list_users(_db())
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="Users")
    for col in ("name", "roles", "source", "state", "last login"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], ", ".join(r["roles"]), r["source"], r["state"],
                      f"{r['last_login_at']:%Y-%m-%d %H:%M}" if r["last_login_at"] else "")
    out.print(table)


def audit_cmd(
    patient: str | None = typer.Option(None, "--patient", help="Only rows about this patient (who saw their data?)."),
    user: str | None = typer.Option(None, "--user", help="Only rows of this actor."),
    since: str | None = typer.Option(None, "--since", help="From this time: ISO (UTC if no offset) or 30m, 12h, 7d."),
    action: str | None = typer.Option(None, "--action", help="Only actions starting with this (e.g. medical.)."),
    limit: int = typer.Option(0, "--limit", help="At most this many rows, newest first (0: all)."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the rows as JSON to this file."),
) -> None:
    """The audit log, newest first: who did what to which object, from where."""
    from trillium.core.audit import audit_rows, parse_since

    try:
        rows = audit_rows(_db(), patient=patient, user=user, since=parse_since(since) if since else None,
                          action=action, limit=limit or None)
    except TrilliumError as exc:
        _fail(exc)
        return
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps([{**r, "at": r["at"].isoformat() if isinstance(r["at"], datetime)
                                          else r["at"]} for r in rows], indent=1, default=str))
        # an export of who-saw-what is itself an access to audit data: recorded
        _db().audit("audit.export", target=str(json_path)[:300], actor=_actor(), rows=len(rows), patient=patient or "",
                    user=user or "", since=since or "", action_prefix=action or "")
        console.print(f"{len(rows)} audit rows written to {json_path}")
        return
    table = Table(title=f"Audit log ({len(rows)} rows)")
    for col in ("at", "actor", "action", "target", "from", "details"):
        table.add_column(col)
    for r in rows:
        details = {k: v for k, v in r["details"].items() if k not in ("origin", "client")}
        table.add_row(f"{r['at']:%Y-%m-%d %H:%M:%S}", r["actor"], r["action"], r["target"], str(r["origin"]),
                      json.dumps(details, default=str)[:200])
    out.print(table)
