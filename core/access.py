"""Who may do what: scopes, roles and API keys, one module for the service and the dashboard.

Scopes are ``<field>:read`` and ``<field>:write`` for each installed vertical (its ``name``), and
``admin`` for user and key administration. ``write`` implies ``read``. Roles are named sets of
scopes: the core defines ``admin`` (everything) and ``viewer`` (every ``read``); each vertical adds
its own (``Vertical.roles``), so a fourth field brings its roles without a change here.

API keys (``trl_<key id>_<secret>``): the key id is public and indexes the row; only the SHA-256
of the 256-bit secret is stored, compared in constant time. A key is shown once, at creation.
``KeyVerifier`` caches a verified key for ``cache_seconds`` (default 5 s) so a request costs no
database round trip; a revocation therefore takes effect within that time in every worker.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from trillium.core.db import ApiKey, Database
from trillium.core.errors import TrilliumError
from trillium.core.verticals import verticals

__all__ = [
    "ADMIN",
    "AccessDeniedError",
    "AuthenticationError",
    "KeyInfo",
    "KeyVerifier",
    "create_key",
    "expand_scopes",
    "list_keys",
    "revoke_key",
    "role_scopes",
    "roles",
    "scopes",
]

ADMIN = "admin"
KEY_PREFIX = "trl"
_KEY = re.compile(r"^trl_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")


class AuthenticationError(TrilliumError):
    """No credential, or one that is unknown, malformed or revoked (HTTP 401)."""


class AccessDeniedError(TrilliumError):
    """A valid credential without the scope an action needs (HTTP 403)."""


def scopes() -> tuple[str, ...]:
    """Every scope: ``admin`` and ``<field>:read|write`` for each installed vertical."""
    out = [ADMIN]
    for v in verticals():
        out += [f"{v.name}:read", f"{v.name}:write"]
    return tuple(out)


def roles() -> dict[str, tuple[str, ...]]:
    """Role -> scopes: ``admin``, ``viewer`` and each vertical's roles."""
    all_scopes = scopes()
    table: dict[str, tuple[str, ...]] = {
        ADMIN: all_scopes,
        "viewer": tuple(s for s in all_scopes if s.endswith(":read")),
    }
    for v in verticals():
        for role, granted in v.roles:
            table[role] = tuple(granted)
    return table


def role_scopes(role: str) -> tuple[str, ...]:
    table = roles()
    if role not in table:
        raise TrilliumError(f"unknown role {role!r}; the roles are {', '.join(sorted(table))}")
    return table[role]


def expand_scopes(granted: list[str] | tuple[str, ...]) -> frozenset[str]:
    """What ``granted`` allows: ``admin`` is every scope; ``x:write`` includes ``x:read``."""
    known = set(scopes())
    out: set[str] = set()
    for s in granted:
        if s == ADMIN:
            return frozenset(known)
        out.add(s)
        if s.endswith(":write"):
            out.add(s[: -len("write")] + "read")
    return frozenset(out)


def _check_scopes(granted: list[str]) -> list[str]:
    known = scopes()
    bad = [s for s in granted if s not in known]
    if bad:
        raise TrilliumError(f"unknown scope(s) {', '.join(bad)}; the scopes are {', '.join(known)}")
    if not granted:
        raise TrilliumError("a key needs at least one scope (or a role)")
    return sorted(set(granted))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    """What a verified key stands for (never its secret)."""

    key_id: str
    owner: str
    scopes: frozenset[str]
    revoked: bool = False
    created_at: datetime | None = None
    description: str = ""

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise AccessDeniedError(f"the key {self.key_id} of {self.owner} lacks the scope {scope!r}")


def create_key(db: Database, owner: str, *, scopes: list[str] | None = None, role: str | None = None,
               description: str = "", created_by: str = "") -> tuple[str, KeyInfo]:
    """Make a key for ``owner`` with ``scopes`` and/or the scopes of ``role``; returns the key (shown
    once; only its hash is stored) and what it stands for. Audited."""
    if not _OWNER.match(owner or ""):
        raise TrilliumError(f"owner {owner!r} must be 1-100 letters, digits or . _ @ - (a user or service name)")
    granted = list(scopes or []) + (list(role_scopes(role)) if role else [])
    granted = _check_scopes(granted)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with db.session() as s:
        s.add(ApiKey(key_id=key_id, secret_sha256=_digest(secret), owner=owner, scopes=granted,
                     description=description, created_by=created_by))
    db.audit("key.create", target=key_id, actor=created_by or None, owner=owner, scopes=granted)
    return f"{KEY_PREFIX}_{key_id}_{secret}", KeyInfo(key_id, owner, expand_scopes(granted), description=description)


def list_keys(db: Database, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    with db.session() as s:
        q = select(ApiKey).order_by(ApiKey.id)
        if not include_revoked:
            q = q.where(ApiKey.revoked_at.is_(None))
        return [{"key_id": k.key_id, "owner": k.owner, "scopes": list(k.scopes), "description": k.description,
                 "created_at": k.created_at, "created_by": k.created_by, "revoked_at": k.revoked_at}
                for k in s.scalars(q)]


def revoke_key(db: Database, key_id: str, *, actor: str = "") -> None:
    """Revoke a key by its id (the ``trl_<id>_`` part); audited. Unknown or revoked: an error."""
    with db.session() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).one_or_none()
        if row is None:
            raise TrilliumError(f"no API key with id {key_id!r} (trillium keys list shows the ids)")
        if row.revoked_at is not None:
            raise TrilliumError(f"API key {key_id} is already revoked (since {row.revoked_at:%Y-%m-%d %H:%M})")
        row.revoked_at = datetime.now(UTC)
    db.audit("key.revoke", target=key_id, actor=actor or None)


class KeyVerifier:
    """Check presented keys against the database, caching each answer for ``cache_seconds``."""

    def __init__(self, db: Database, cache_seconds: float = 5.0) -> None:
        self.db = db
        self.cache_seconds = float(cache_seconds)
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}
        self._lock = threading.Lock()

    def cached(self, presented: str | None) -> KeyInfo | None:
        """The cached, still fresh answer for a valid key (no database read); None otherwise."""
        if not presented:
            return None
        hit = self._cache.get(_digest(presented))
        if hit is not None and time.monotonic() - hit[0] < self.cache_seconds:
            return hit[1]
        return None

    def verify(self, presented: str | None) -> KeyInfo:
        """The key's ``KeyInfo``; ``AuthenticationError`` (never naming the secret) otherwise."""
        if not presented:
            raise AuthenticationError("an API key is required: send it in the X-API-Key header")
        now = time.monotonic()
        digest = _digest(presented)
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < self.cache_seconds:
            info = hit[1]
        else:
            info = self._lookup(presented)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now, info)
        if info is None:
            raise AuthenticationError("the API key is unknown, malformed or revoked")
        return info

    def _lookup(self, presented: str) -> KeyInfo | None:
        m = _KEY.match(presented)
        if not m:
            return None
        key_id, secret = m.groups()
        with self.db.session() as s:
            row = s.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).one_or_none()
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.secret_sha256, _digest(secret)):
                return None
            return KeyInfo(row.key_id, row.owner, expand_scopes(list(row.scopes)), created_at=row.created_at,
                           description=row.description)
