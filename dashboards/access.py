"""The dashboard's login gate: every page calls ``require(scope)`` before it shows anything.

Why here and not in Streamlit's config: Streamlit serves every page to whoever reaches its
port. The gate makes each script stop at a login form until the session holds a user, and at an
explanation when the user's roles lack the page's scope. Roles and scopes are the API keys' own
(``trillium.core.access``): a page of field ``x`` needs ``x:read``, its actions ``x:write``, user
and key administration ``admin``.

Two ways in (``trillium.core.users``):

- built-in accounts, through the login form (Argon2id; five wrong passwords lock the account);
- OpenID Connect through Streamlit's ``st.login`` (Authlib), when ``trillium dashboard`` found an
  owner-only ``oidc.toml`` (``TRILLIUM_OIDC_CONFIG``, default ``$TRILLIUM_HOME/oidc.toml``) with
  Streamlit's ``[auth]`` section; its ``[trillium]`` section names the claim holding the roles
  (``role_claim``, default ``roles``) and the one naming the user (``name_claim``, default
  ``email``). A claim value that is no role is ignored (and audited).

The user is re-read from the database at every rerun, so a disabled account or a changed role
takes effect at the user's next click. A session ends on logout and after
``TRILLIUM_SESSION_IDLE_MINUTES`` (default 15) without interaction; a fragment looks every half
minute, so an idle screen does not keep showing patient data. Every login, failure, lock, logout,
expiry and refused page is audited with the client's address (``origin``).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

from trillium.core.errors import ConfigError, TrilliumError

__all__ = ["audit_view", "origin", "require"]

_SESSION = "_trillium_user"
_SEEN = "_trillium_audited"
DASHBOARDS = Path(__file__).parent


def idle_seconds() -> float:
    raw = os.environ.get("TRILLIUM_SESSION_IDLE_MINUTES", "").strip() or "15"
    try:
        minutes = float(raw)
    except ValueError:
        raise ConfigError(f"TRILLIUM_SESSION_IDLE_MINUTES={raw!r} is not a number of minutes") from None
    if minutes <= 0:
        raise ConfigError(f"TRILLIUM_SESSION_IDLE_MINUTES must be above 0, got {raw}")
    return minutes * 60


def origin() -> str:
    """Where the request comes from: the websocket peer's address ("localhost" on loopback), and a
    proxy's X-Forwarded-For after it when one sent it (kept as told: it can be spoofed)."""
    try:
        ip = st.context.ip_address
        forwarded = st.context.headers.get("X-Forwarded-For", "")
    except Exception:  # noqa: BLE001 - no client context (AppTest)
        ip, forwarded = None, ""
    ip = ip if isinstance(ip, str) and ip and ip not in ("::ffff:127.0.0.1", "127.0.0.1", "::1") else "localhost"
    forwarded = forwarded if isinstance(forwarded, str) else ""  # (AppTest hands back mocks)
    return ip + (f" (forwarded for {forwarded[:100]})" if forwarded else "")


def _db() -> Any:
    from trillium.core import db as dbmod
    from trillium.core.config import database_url

    return dbmod.connect(database_url())


def _oidc_settings() -> dict[str, Any] | None:
    """The OIDC settings when ``st.secrets`` (the file ``trillium dashboard`` passed) has ``[auth]``."""
    try:
        if "auth" not in st.secrets:
            return None
        extra = dict(st.secrets.get("trillium", {}))
    except Exception:  # noqa: BLE001 - no secrets file at all: built-in accounts only
        return None
    return {"role_claim": str(extra.get("role_claim", "roles")), "name_claim": str(extra.get("name_claim", "email")),
            "label": str(extra.get("provider_label", "your organisation's sign-in"))}


def _claim_roles(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    return [str(v) for v in value]


def _end(db: Any, reason: str) -> None:
    user = st.session_state.pop(_SESSION, None)
    st.session_state.pop(_SEEN, None)
    if user:
        db.audit(f"user.{reason}", target=user["name"], actor=user["name"], origin=origin())


def _login_form(db: Any, note: str = "") -> None:
    st.title("Trillium")
    st.subheader("Log in")
    if note:
        st.info(note)
    from sqlalchemy import func, select

    from trillium.core.db import User

    with db.session() as s:
        if not s.scalar(select(func.count()).select_from(User)):
            st.info("No account exists yet. Make the first one with `trillium users add NAME --role admin` "
                    "(or run `make demo`, which makes one per role).")
    oidc = _oidc_settings()
    if oidc is not None:
        if getattr(st.user, "is_logged_in", False):
            claims = st.user.to_dict()
            name = str(claims.get(oidc["name_claim"]) or claims.get("sub") or "")
            from trillium.core.access import AuthenticationError
            from trillium.core.users import oidc_login

            try:
                info = oidc_login(db, name, _claim_roles(claims.get(oidc["role_claim"])),
                                  issuer=str(claims.get("iss", "")), origin=origin())
            except (AuthenticationError, TrilliumError) as exc:
                st.error(f"The identity provider's login is refused: {exc}")
                if st.button("Log out of the identity provider", key="oidc_logout"):
                    st.logout()
                st.stop()
            st.session_state[_SESSION] = {"name": info.name, "source": "oidc", "last_seen": time.time()}
            st.rerun()
        if st.button(f"Log in with {oidc['label']}", key="oidc_login", type="primary"):
            st.login()
        st.caption("or with a built-in account:")
    with st.form("login", clear_on_submit=True):
        name = st.text_input("User name", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        from trillium.core.access import AuthenticationError
        from trillium.core.users import authenticate

        try:
            info = authenticate(db, name.strip(), password, origin=origin())
        except AuthenticationError as exc:
            st.error(str(exc))
        else:
            st.session_state[_SESSION] = {"name": info.name, "source": "local", "last_seen": time.time()}
            st.rerun()
    st.stop()


def _pages() -> list[tuple[str, str, str | None]]:
    """(path relative to Home.py, label, scope) of each page: a page of field x needs x:read; a
    page of no field (Monitoring) needs a login only."""
    from trillium.core.verticals import verticals

    fields = {v.name for v in verticals()}
    out: list[tuple[str, str, str | None]] = [("Home.py", "Home", None)]
    for p in sorted((DASHBOARDS / "pages").glob("[0-9]*_*.py")):
        label = p.stem.split("_", 1)[1].replace("_", " ")
        field = label.lower().replace(" ", "_")
        out.append((f"pages/{p.name}", label, f"{field}:read" if field in fields else None))
    return out


@st.fragment(run_every=30)
def _idle_watch(last_seen: float, limit: float) -> None:
    """Rerun the page (which ends the session) once the idle time is over, with no click needed."""
    if time.time() - last_seen > limit:
        st.rerun(scope="app")


def require(scope: str | None = None) -> Any:
    """Stop the page at the login form unless a user is logged in, and at an explanation unless
    their roles hold ``scope``; return the user's ``UserInfo``. Draws the sidebar: who, the pages
    they may open, log out."""
    from sqlalchemy import select

    from trillium.core.db import User
    from trillium.core.users import _info

    try:
        db = _db()
        limit = idle_seconds()
    except TrilliumError as exc:
        st.error(f"The dashboard cannot start: {exc}")
        st.stop()
    session = st.session_state.get(_SESSION)
    if session is None:
        _login_form(db)
    now = time.time()
    if now - float(session.get("last_seen", 0)) > limit:
        source = session.get("source")
        _end(db, "session_expired")
        if source == "oidc" and getattr(st.user, "is_logged_in", False):
            st.logout()
        _login_form(db, f"Your session ended after {limit / 60:g} minutes without activity. Log in again.")
    with db.session() as s:
        row = s.scalars(select(User).where(User.name == session["name"])).one_or_none()
        info = _info(row) if row is not None and row.disabled_at is None else None
    if info is None:
        _end(db, "session_revoked")
        _login_form(db, "Your account is disabled or no longer exists.")
    session["last_seen"] = now
    with st.sidebar:
        st.markdown(f"Signed in as **{info.name}** ({', '.join(info.roles) or 'no role'})")
        for path, label, needs in _pages():
            if needs is None or info.allows(needs):
                # a page run alone (AppTest) has no multipage app to link into
                with contextlib.suppress(StreamlitAPIException):
                    st.page_link(path, label=label)
        if st.button("Log out", key="logout"):
            _end(db, "logout")
            if session.get("source") == "oidc":
                st.logout()
            st.rerun()
        _idle_watch(now, limit)
    if scope is not None and not info.allows(scope):
        db.audit("access.denied", target=scope, actor=info.name, page=scope.split(":")[0], origin=origin())
        st.error(f"Your role ({', '.join(info.roles) or 'none'}) does not open this page: it needs {scope!r}. "
                 "Ask an administrator (trillium users grant).")
        st.stop()
    return info


def audit_view(user: Any, action: str, target: str, **details: Any) -> None:
    """Audit that ``user`` saw ``target`` (a note, a study, a patient, a transaction), once per
    session and object: reruns of the same view (a slider moved) add no rows."""
    seen = st.session_state.setdefault(_SEEN, set())
    key = (action, target)
    if key in seen:
        return
    _db().audit(action, target=target, actor=user.name, origin=origin(), **details)
    seen.add(key)
