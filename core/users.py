"""People who log in: built-in accounts (Argon2id), accounts from the identity provider, lock-out.

The dashboard's logins and the service's API keys share one set of roles and scopes
(``trillium.core.access``): a clinician's account and a clinician's key allow the same things.

- Passwords are hashed with Argon2id (argon2-cffi's defaults: RFC 9106's low-memory profile); a
  hash made with weaker parameters is upgraded at the next successful login.
- ``max_failures()`` wrong passwords in a row (default 5, ``TRILLIUM_LOGIN_MAX_FAILURES``) lock the
  account for ``lock_seconds()`` (default 15 minutes, ``TRILLIUM_LOGIN_LOCK_MINUTES``); the counter
  is incremented in the database (one UPDATE), so parallel guesses cannot slip past it.
- An unknown name costs the same Argon2 verification as a known one (no timing oracle for names),
  and its error is the same as a wrong password's.
- Every login, failure, lock and account change is written to the audit log, with where it came
  from (``origin``: the client's address) when the caller knows it. No password is ever logged,
  stored or put in an error.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from trillium.core.access import ADMIN, AccessDeniedError, AuthenticationError, expand_scopes, role_scopes, roles
from trillium.core.db import Database, User
from trillium.core.errors import ConfigError, TrilliumError

__all__ = [
    "AccountLockedError",
    "UserInfo",
    "add_user",
    "authenticate",
    "disable_user",
    "grant_roles",
    "list_users",
    "max_failures",
    "oidc_login",
    "read_secret",
    "set_password",
]

MIN_PASSWORD_LENGTH = 12


class AccountLockedError(AuthenticationError):
    """Too many wrong passwords in a row: the account refuses logins until ``until``."""

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message)
        self.until = until


@dataclass(frozen=True)
class UserInfo:
    """Who is logged in and what their roles allow (never a password or hash)."""

    name: str
    roles: tuple[str, ...]
    scopes: frozenset[str]
    source: str = "local"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise AccessDeniedError(f"{self.name} ({', '.join(self.roles) or 'no role'}) lacks the scope {scope!r}")

    @property
    def is_admin(self) -> bool:
        return self.allows(ADMIN)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


def max_failures() -> int:
    """Wrong passwords in a row that lock an account (``TRILLIUM_LOGIN_MAX_FAILURES``, default 5)."""
    return _env_int("TRILLIUM_LOGIN_MAX_FAILURES", 5)


def lock_seconds() -> int:
    """How long a locked account refuses logins (``TRILLIUM_LOGIN_LOCK_MINUTES``, default 15)."""
    return 60 * _env_int("TRILLIUM_LOGIN_LOCK_MINUTES", 15)


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()  # Argon2id, RFC 9106 low-memory profile (argon2-cffi >= 21.2)


_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    """A hash to verify against when the name is unknown, so both cost the same time."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _hasher().hash(os.urandom(16).hex())
    return _DUMMY_HASH


def _check_name(name: str) -> str:
    from trillium.core.access import _OWNER

    if not _OWNER.match(name or ""):
        raise TrilliumError(f"user name {name!r} must be 1-100 letters, digits or . _ @ - and start with a "
                            "letter or digit")
    return name


def _check_roles(granted: list[str] | tuple[str, ...]) -> list[str]:
    known = roles()
    bad = [r for r in granted if r not in known]
    if bad:
        raise TrilliumError(f"unknown role(s) {', '.join(bad)}; the roles are {', '.join(sorted(known))}")
    return sorted(set(granted))


def _check_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise TrilliumError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    return password


def _info(row: User) -> UserInfo:
    granted: list[str] = []
    for r in row.roles or []:
        try:
            granted += role_scopes(r)
        except TrilliumError:  # a role whose vertical is no longer installed grants nothing
            continue
    return UserInfo(row.name, tuple(row.roles or ()), expand_scopes(granted) if granted else frozenset(),
                    row.source)


def read_secret(*, env: str | None = None, file: Path | None = None, what: str = "password") -> str | None:
    """A secret from the environment variable ``env`` or from ``file``, which must be a regular file
    readable by its owner only (mode 600 or 400); None when neither is given. Never from argv: a
    command line is visible to every user of the machine (``ps``) and kept in shell histories."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"the environment variable {env} (named for the {what}) is unset or empty")
        return value
    if file is not None:
        try:
            st_ = file.stat()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} file {file}: {exc.strerror}") from None
        if not stat.S_ISREG(st_.st_mode):
            raise ConfigError(f"the {what} file {file} is not a regular file")
        if st_.st_mode & 0o077:
            raise ConfigError(f"the {what} file {file} is readable by others (mode {stat.S_IMODE(st_.st_mode):o}); "
                              f"chmod 600 {file}")
        value = file.read_text().rstrip("\r\n")
        if not value:
            raise ConfigError(f"the {what} file {file} is empty")
        return value
    return None


def add_user(db: Database, name: str, password: str | None, roles_: list[str], *, actor: str = "",
             source: str = "local") -> UserInfo:
    """Create an account with ``roles_``; a built-in one needs a password. Audited (never the password)."""
    _check_name(name)
    granted = _check_roles(roles_)
    if source == "local":
        digest: str | None = _hasher().hash(_check_password(password or ""))
    else:
        digest = None
    with db.session() as s:
        if s.scalars(select(User).where(User.name == name)).one_or_none() is not None:
            raise TrilliumError(f"a user named {name!r} already exists (trillium users list)")
        row = User(name=name, password_hash=digest, roles=granted, source=source, created_by=actor)
        s.add(row)
    db.audit("user.add", target=name, actor=actor or None, roles=granted, source=source)
    return _info(row)


def _get(s: Any, name: str) -> User:
    row = s.scalars(select(User).where(User.name == name)).one_or_none()
    if row is None:
        raise TrilliumError(f"no user named {name!r} (trillium users list)")
    return row


def set_password(db: Database, name: str, password: str, *, actor: str = "") -> None:
    """A new password for a built-in account; it also lifts a lock-out. Audited."""
    digest = _hasher().hash(_check_password(password))
    with db.session() as s:
        row = _get(s, name)
        if row.source != "local":
            raise TrilliumError(f"{name} logs in through the identity provider ({row.source}); it has no password here")
        row.password_hash = digest
        row.failed_logins = 0
        row.locked_until = None
    db.audit("user.passwd", target=name, actor=actor or None)


def disable_user(db: Database, name: str, *, actor: str = "", enable: bool = False) -> None:
    """Disable (or re-enable) an account; a disabled account cannot log in. Audited."""
    with db.session() as s:
        row = _get(s, name)
        row.disabled_at = None if enable else datetime.now(UTC)
        if enable:
            row.failed_logins = 0
            row.locked_until = None
    db.audit("user.enable" if enable else "user.disable", target=name, actor=actor or None)


def grant_roles(db: Database, name: str, add: list[str], *, remove: list[str] | None = None,
                actor: str = "") -> UserInfo:
    """Add and/or remove roles of an account; returns what it now holds. Audited."""
    add_ = _check_roles(add) if add else []
    remove_ = _check_roles(remove) if remove else []
    with db.session() as s:
        row = _get(s, name)
        before = list(row.roles or [])
        row.roles = sorted((set(before) | set(add_)) - set(remove_))
        after = list(row.roles)
    db.audit("user.grant", target=name, actor=actor or None, before=before, after=after)
    with db.session() as s:
        return _info(_get(s, name))


def list_users(db: Database) -> list[dict[str, Any]]:
    """Every account and its state (never a hash)."""
    now = datetime.now(UTC)
    with db.session() as s:
        out = []
        for u in s.scalars(select(User).order_by(User.name)):
            locked = u.locked_until is not None and _aware(u.locked_until) > now
            state = "disabled" if u.disabled_at else "locked" if locked else "active"
            out.append({"name": u.name, "roles": list(u.roles or []), "source": u.source, "state": state,
                        "failed_logins": u.failed_logins, "locked_until": u.locked_until,
                        "last_login_at": u.last_login_at, "created_at": u.created_at, "created_by": u.created_by})
        return out


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # SQLite hands timestamps back naive (they are UTC)


_WRONG = "wrong user name or password"


def authenticate(db: Database, name: str, password: str, *, origin: str = "") -> UserInfo:
    """Check a built-in account's password. Success and every failure are audited; the
    ``max_failures()``-th wrong password in a row locks the account (``AccountLockedError``)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _hasher()
    now = datetime.now(UTC)
    with db.session() as s:
        row = s.scalars(select(User).where(User.name == name)).one_or_none()
        digest = row.password_hash if row is not None and row.source == "local" else None
        locked_until = _aware(row.locked_until) if row is not None and row.locked_until else None
        disabled = row is not None and row.disabled_at is not None
    if row is None or digest is None:
        try:
            hasher.verify(_dummy_hash(), password or "")
        except VerificationError:
            pass
        db.audit("user.login_failed", target=name[:300], actor=name[:100] or "-", reason="unknown user"
                 if row is None else f"no password ({row.source} account)", origin=origin)
        raise AuthenticationError(_WRONG)
    if disabled:
        db.audit("user.login_failed", target=name, actor=name, reason="disabled", origin=origin)
        raise AuthenticationError("this account is disabled; ask an administrator")
    if locked_until is not None and locked_until > now:
        db.audit("user.login_failed", target=name, actor=name, reason="locked", origin=origin)
        raise AccountLockedError(f"this account is locked after {max_failures()} failed logins; "
                                 f"try again after {locked_until:%H:%M} UTC", locked_until)
    try:
        hasher.verify(digest, password or "")
    except (VerificationError, InvalidHashError):
        with db.session() as s:
            s.execute(update(User).where(User.name == name).values(failed_logins=User.failed_logins + 1))
            failures = s.scalar(select(User.failed_logins).where(User.name == name)) or 0
            lock = failures >= max_failures()
            until = now + timedelta(seconds=lock_seconds())
            if lock:
                s.execute(update(User).where(User.name == name).values(failed_logins=0, locked_until=until))
        db.audit("user.login_failed", target=name, actor=name, reason="wrong password", failures=failures,
                 origin=origin)
        if lock:
            db.audit("user.locked", target=name, actor=name, failures=failures, until=until.isoformat(),
                     origin=origin)
            raise AccountLockedError(f"this account is now locked after {failures} failed logins; "
                                     f"try again after {until:%H:%M} UTC", until) from None
        raise AuthenticationError(_WRONG) from None
    with db.session() as s:
        row = _get(s, name)
        row.failed_logins = 0
        row.locked_until = None
        row.last_login_at = now
        if hasher.check_needs_rehash(digest):
            row.password_hash = hasher.hash(password)
        info = _info(row)
    db.audit("user.login", target=name, actor=name, method="password", roles=list(info.roles), origin=origin)
    return info


def oidc_login(db: Database, name: str, roles_: list[str], *, issuer: str = "", origin: str = "") -> UserInfo:
    """Record a login through the identity provider: the account (``source`` "oidc") is made on first
    login and takes the roles of the provider's claim at every login. A built-in account of the same
    name is never taken over, and a disabled account stays out. Audited."""
    _check_name(name)
    known = roles()
    granted = sorted({r for r in roles_ if r in known})
    ignored = sorted(set(roles_) - set(granted))
    now = datetime.now(UTC)
    with db.session() as s:
        row = s.scalars(select(User).where(User.name == name)).one_or_none()
        if row is not None and row.source != "oidc":
            reason = "a built-in account has this name"
        elif row is not None and row.disabled_at is not None:
            reason = "disabled"
        else:
            reason = ""
            if row is None:
                row = User(name=name, password_hash=None, roles=granted, source="oidc", created_by=issuer or "oidc")
                s.add(row)
            row.roles = granted
            row.last_login_at = now
    if reason:
        db.audit("user.login_failed", target=name, actor=name, method="oidc", reason=reason, origin=origin)
        raise AuthenticationError(f"{name} cannot log in through the identity provider: {reason}")
    db.audit("user.login", target=name, actor=name, method="oidc", issuer=issuer, roles=granted,
             ignored_roles=ignored, origin=origin)
    with db.session() as s:
        return _info(_get(s, name))


def oidc_config() -> Path | None:
    """The dashboard's OpenID Connect settings file, if any: ``TRILLIUM_OIDC_CONFIG`` or
    ``$TRILLIUM_HOME/oidc.toml``. It holds the client secret and the cookie secret, so it must be
    readable by its owner only (a ``ConfigError`` otherwise, before the dashboard starts)."""
    from trillium.core.config import home_dir

    raw = os.environ.get("TRILLIUM_OIDC_CONFIG", "").strip()
    path = Path(raw) if raw else home_dir() / "oidc.toml"
    if not path.exists():
        if raw:
            raise ConfigError(f"TRILLIUM_OIDC_CONFIG names {path}, which does not exist")
        return None
    read_secret(file=path, what="OIDC settings")  # checks the mode
    return path
