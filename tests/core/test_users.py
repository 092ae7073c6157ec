"""Accounts, Argon2id passwords, lock-out, roles shared with the API keys, and the append-only
audit log, on SQLite and on the real PostgreSQL server; the ``trillium users`` and ``trillium
audit`` commands."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from trillium.core import db as dbmod
from trillium.core.access import AuthenticationError, role_scopes
from trillium.core.audit import audit_rows, parse_since
from trillium.core.db import AuditEvent, User
from trillium.core.errors import ConfigError, TrilliumError
from trillium.core.users import (
    AccountLockedError,
    add_user,
    authenticate,
    disable_user,
    grant_roles,
    list_users,
    oidc_login,
    read_secret,
    set_password,
)

PW = "correct horse battery staple"


def actions(db: dbmod.Database, name: str) -> list[str]:
    with db.session() as s:
        return [e.action for e in s.scalars(select(AuditEvent).where(AuditEvent.target == name)
                                             .order_by(AuditEvent.id))]


def test_password_is_argon2id_and_login_is_audited(database: dbmod.Database) -> None:
    info = add_user(database, "ana", PW, ["clinician"], actor="admin")
    assert info.roles == ("clinician",)
    assert info.scopes == {"medical:read", "medical:write"}  # the same scopes a clinician's API key gets
    assert set(role_scopes("clinician")) <= info.scopes and not info.allows("finance:read")
    with database.session() as s:
        stored = s.scalars(select(User).where(User.name == "ana")).one().password_hash
    assert stored.startswith("$argon2id$") and PW not in stored
    who = authenticate(database, "ana", PW, origin="10.0.0.7")
    assert who.name == "ana" and who.allows("medical:write")
    rows = audit_rows(database, user="ana")
    assert rows[0]["action"] == "user.login" and rows[0]["origin"] == "10.0.0.7"
    assert actions(database, "ana") == ["user.add", "user.login"]
    # no password in any audit row
    assert PW not in json.dumps(audit_rows(database), default=str)


def test_five_wrong_passwords_lock_the_account_and_a_new_password_lifts_it(database: dbmod.Database) -> None:
    add_user(database, "bo", PW, ["fraud_analyst"])
    for _ in range(4):
        with pytest.raises(AuthenticationError, match="wrong user name or password") as err:
            authenticate(database, "bo", "not the password")
        assert not isinstance(err.value, AccountLockedError)
    with pytest.raises(AccountLockedError, match="locked after 5 failed logins"):
        authenticate(database, "bo", "still not it")
    with pytest.raises(AccountLockedError):  # the right password does not open a locked account
        authenticate(database, "bo", PW)
    assert [u["state"] for u in list_users(database)] == ["locked"]
    assert actions(database, "bo") == ["user.add"] + ["user.login_failed"] * 5 + ["user.locked", "user.login_failed"]
    # the lock runs out (moved into the past here) ...
    with database.session() as s:
        s.execute(update(User).where(User.name == "bo").values(locked_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert authenticate(database, "bo", PW).name == "bo"
    # ... or an administrator sets a new password
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            authenticate(database, "bo", "wrong")
    set_password(database, "bo", "another long password")
    assert authenticate(database, "bo", "another long password").name == "bo"
    with pytest.raises(AuthenticationError):
        authenticate(database, "bo", PW)


def test_unknown_disabled_and_granted(database: dbmod.Database) -> None:
    with pytest.raises(AuthenticationError, match="^wrong user name or password$"):
        authenticate(database, "nobody", PW)
    add_user(database, "cy", PW, ["viewer"])
    info = grant_roles(database, "cy", ["quality_engineer"], remove=["viewer"])
    assert info.roles == ("quality_engineer",) and info.allows("manufacturing:write")
    assert not info.allows("medical:read")
    disable_user(database, "cy")
    with pytest.raises(AuthenticationError, match="disabled"):
        authenticate(database, "cy", PW)
    disable_user(database, "cy", enable=True)
    assert authenticate(database, "cy", PW).name == "cy"
    assert actions(database, "cy") == ["user.add", "user.grant", "user.disable", "user.login_failed",
                                       "user.enable", "user.login"]
    with pytest.raises(TrilliumError, match="unknown role.*nurse"):
        add_user(database, "di", PW, ["nurse"])
    with pytest.raises(TrilliumError, match="at least 12 characters"):
        add_user(database, "di", "short", ["viewer"])
    with pytest.raises(TrilliumError, match="user name"):
        add_user(database, "a b", PW, ["viewer"])
    with pytest.raises(TrilliumError, match="already exists"):
        add_user(database, "cy", PW, ["viewer"])


def test_oidc_accounts_take_the_claimed_roles_and_never_a_local_name(database: dbmod.Database) -> None:
    who = oidc_login(database, "eve@example.org", ["clinician", "not-a-role"], issuer="http://idp", origin="::1")
    assert who.source == "oidc" and who.roles == ("clinician",)
    assert oidc_login(database, "eve@example.org", ["viewer"]).roles == ("viewer",)  # the claim wins each login
    with pytest.raises(AuthenticationError):  # an OIDC account has no password here
        authenticate(database, "eve@example.org", PW)
    add_user(database, "root", PW, ["admin"])
    with pytest.raises(AuthenticationError, match="built-in account"):
        oidc_login(database, "root", ["admin"])
    login = audit_rows(database, user="eve@example.org", action="user.login")[-1]
    assert login["details"]["ignored_roles"] == ["not-a-role"] and login["origin"] == "::1"


def test_audit_log_refuses_update_and_delete_in_the_database(database: dbmod.Database) -> None:
    database.audit("medical.note.view", target="note-1", actor="ana", patient="p-9")
    for stmt in (update(AuditEvent).values(actor="someone else"), delete(AuditEvent)):
        with pytest.raises(DBAPIError, match="append-only"), database.session() as s:
            s.execute(stmt)
    with pytest.raises(DBAPIError, match="append-only"), database.session() as s:  # through the ORM too
        s.scalars(select(AuditEvent)).one().actor = "mallory"
    if database.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), database.engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_log"))
    with database.session() as s:
        assert [(e.actor, e.target) for e in s.scalars(select(AuditEvent))] == [("ana", "note-1")]
    database.audit("medical.ct.view", target="study-2", actor="bo", patient="p-9")  # inserting still works
    assert len(audit_rows(database)) == 2


def test_audit_rows_answer_who_saw_a_patient(database: dbmod.Database) -> None:
    database.audit("medical.note.view", target="note-1", actor="ana", patient="p-1")
    database.audit("medical.ct.view", target="study-3", actor="bo", patient_id="p-1")
    database.audit("medical.note.view", target="note-2", actor="bo", patient="p-2")
    database.audit("medical.patient.view", target="p-1", actor="cy")
    assert [r["actor"] for r in audit_rows(database, patient="p-1")] == ["cy", "bo", "ana"]
    assert [r["target"] for r in audit_rows(database, patient="p-1", user="bo")] == ["study-3"]
    assert len(audit_rows(database, since=datetime.now(UTC) - timedelta(minutes=5))) == 4
    assert audit_rows(database, since=datetime.now(UTC) + timedelta(minutes=5)) == []
    assert len(audit_rows(database, action="medical.note")) == 2


def test_parse_since() -> None:
    assert parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert abs((datetime.now(UTC) - parse_since("2h")).total_seconds() - 7200) < 5
    with pytest.raises(TrilliumError, match="--since 'yesterday'"):
        parse_since("yesterday")


def test_secrets_come_from_the_environment_or_an_owner_only_file(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_VAR", PW)
    assert read_secret(env="PW_VAR") == PW
    with pytest.raises(ConfigError, match="UNSET_VAR"):
        read_secret(env="UNSET_VAR")
    f = tmp_path / "pw"
    f.write_text(PW + "\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        read_secret(file=f)
    f.chmod(0o600)
    assert read_secret(file=f) == PW


def test_users_and_audit_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trillium.core.cli import app

    runner = CliRunner()
    monkeypatch.setenv("NEW_PW", PW)
    res = runner.invoke(app, ["users", "add", "fay", "--role", "clinician", "--password-env", "NEW_PW"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["users", "add", "gus", "--role", "viewer"], input=f"{PW}\n{PW}\n")  # the prompt
    assert res.exit_code == 0, res.output
    assert PW not in res.stdout
    res = runner.invoke(app, ["users", "add", "hal", "--role", "viewer", "--password", PW])
    assert res.exit_code != 0  # there is no option that takes a password on the command line
    res = runner.invoke(app, ["users", "grant", "gus", "fraud_analyst"])
    assert res.exit_code == 0 and "fraud_analyst, viewer" in res.output
    res = runner.invoke(app, ["users", "disable", "gus"])
    assert res.exit_code == 0
    res = runner.invoke(app, ["users", "passwd", "fay", "--password-env", "MISSING_VAR"])
    assert res.exit_code == 2 and "MISSING_VAR" in res.output
    res = runner.invoke(app, ["users", "list", "--json"])
    listed = {u["name"]: u for u in json.loads(res.stdout)}
    assert listed["gus"]["state"] == "disabled" and listed["fay"]["roles"] == ["clinician"]
    assert "hash" not in res.stdout and "argon2" not in res.stdout
    db = dbmod.connect()
    authenticate(db, "fay", PW)
    db.audit("medical.note.view", target="note-1", actor="fay", patient="p-7")
    out = tmp_path / "audit.json"
    res = runner.invoke(app, ["audit", "--patient", "p-7", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [(r["actor"], r["action"], r["target"]) for r in rows] == [("fay", "medical.note.view", "note-1")]
    export = audit_rows(db, action="audit.export")
    assert [(e["target"], e["details"]["rows"], e["details"]["patient"]) for e in export] == [(str(out), 1, "p-7")]
    res = runner.invoke(app, ["audit", "--user", "fay", "--since", "1h"])
    assert res.exit_code == 0 and "user.login" in res.stdout
    res = runner.invoke(app, ["audit", "--since", "last week"])
    assert res.exit_code == 2 and "--since" in res.output
    assert os.environ["NEW_PW"] not in json.dumps(audit_rows(db), default=str)


def test_demo_accounts_one_per_role_in_an_owner_only_file(trillium_home: Path) -> None:
    import io
    import stat

    from rich.console import Console

    from trillium.core.access import roles
    from trillium.core.access_demo import accounts_demo
    from trillium.core.demo import demo_steps

    assert "accounts" in [name for name, _ in demo_steps()]
    printed = io.StringIO()
    out = accounts_demo(Console(file=printed, width=300))
    path = Path(out["file"])
    assert path == trillium_home / "demo-accounts" and str(path) in printed.getvalue()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [ln.split() for ln in path.read_text().splitlines() if not ln.startswith("#")]
    assert sorted(role for _, role, _ in lines) == sorted(roles())
    db = dbmod.connect()
    for name, role, password in lines:
        assert password not in printed.getvalue()
        assert authenticate(db, name, password).roles == (role,)
    # a rerun rotates the passwords and keeps one account per role
    path.chmod(0o644)
    accounts_demo(Console(file=io.StringIO()))
    again = {n: p for n, _, p in (ln.split() for ln in path.read_text().splitlines() if not ln.startswith("#"))}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(again) == {n for n, _, _ in lines} and all(again[n] != p for n, _, p in lines)
    assert len(list_users(db)) == len(roles())


def test_a_database_password_is_in_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable server or a bad URL: one error line, naming the host but not the password."""
    from trillium.core.cli import app

    secret = "Db-Pa55word-never-shown"
    for url in (f"postgresql+psycopg://trillium:{secret}@127.0.0.1:1/x",
                f"nosuchdriver://trillium:{secret}@127.0.0.1:1/x"):
        monkeypatch.setenv("TRILLIUM_DB_URL", url)
        dbmod.reset_connections()
        res = CliRunner().invoke(app, ["users", "list"])
        assert res.exit_code == 2, res.output  # one clear line, no traceback
        text_ = res.output
        assert "127.0.0.1" in text_ or "nosuchdriver" in text_
        assert secret not in text_, text_
