"""Log an AppTest page in: the dashboard's pages stop at the login form without a session."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

from trillium.core.db import User, connect

PASSWORD = "a long test password"


def logged_in(at: AppTest, roles: tuple[str, ...] = ("admin",), name: str = "tester") -> AppTest:
    """Make the account ``name`` with ``roles`` (once per database) and put it in the page's session."""
    from sqlalchemy import select

    from trillium.core.users import add_user

    db = connect()
    with db.session() as s:
        exists = s.scalars(select(User).where(User.name == name)).one_or_none() is not None
    if not exists:
        add_user(db, name, PASSWORD, list(roles), actor="test-setup")
    at.session_state["_trillium_user"] = {"name": name, "source": "local", "last_seen": time.time()}
    return at
