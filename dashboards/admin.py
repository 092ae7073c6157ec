"""The home page's administration section (admins only): the latest audit entries, accounts and
API keys. Thin over ``trillium.core.users``, ``trillium.core.access`` and ``trillium.core.audit``;
every change goes through them, so it is checked and audited exactly as from the CLI, with the
administrator as the actor and their address as the origin."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from trillium.core.errors import TrilliumError

__all__ = ["admin_section"]


def admin_section(db: Any, user: Any) -> None:
    from trillium.core.access import list_keys, revoke_key, roles
    from trillium.core.audit import audit_rows
    from trillium.core.users import add_user, disable_user, grant_roles, list_users

    st.subheader("Latest audit entries")
    rows = audit_rows(db, limit=50)
    if rows:
        st.dataframe(pd.DataFrame([{"at": r["at"], "actor": r["actor"], "action": r["action"], "target": r["target"],
                                    "from": r["origin"]} for r in rows]),
                     hide_index=True, width="stretch", key="audit_latest")
    else:
        st.info("The audit log is empty.")
    st.caption("The whole log, filtered: `trillium audit --patient ID --user NAME --since 7d --json out.json`.")

    st.subheader("Users")
    users = list_users(db)
    st.dataframe(pd.DataFrame([{k: u[k] for k in ("name", "roles", "source", "state", "last_login_at")}
                               for u in users]), hide_index=True, width="stretch", key="users_table")
    actor = user.name
    with st.expander("Add a user"), st.form("add_user", clear_on_submit=True):
        name = st.text_input("User name", key="new_user")
        granted = st.multiselect("Roles", sorted(roles()), key="new_roles")
        pw = st.text_input("Initial password (12 characters or more)", type="password", key="new_password")
        if st.form_submit_button("Add"):
            try:
                add_user(db, name.strip(), pw, granted, actor=actor)
                st.success(f"User {name} added.")
            except TrilliumError as exc:
                st.error(str(exc))
    names = [u["name"] for u in users if u["name"] != user.name]
    if names:
        with st.expander("Change a user"):
            who = st.selectbox("User", names, key="admin_user")
            c1, c2 = st.columns(2)
            new_roles = c1.multiselect("Roles", sorted(roles()), key="admin_roles",
                                       default=next(u["roles"] for u in users if u["name"] == who))
            if c1.button("Set roles", key="admin_set_roles"):
                current = next(u["roles"] for u in users if u["name"] == who)
                try:
                    grant_roles(db, who, [r for r in new_roles if r not in current],
                                remove=[r for r in current if r not in new_roles], actor=actor)
                    st.success(f"{who}: {', '.join(new_roles) or 'no role'}")
                except TrilliumError as exc:
                    st.error(str(exc))
            disabled = next(u["state"] for u in users if u["name"] == who) == "disabled"
            if c2.button("Enable" if disabled else "Disable", key="admin_disable"):
                disable_user(db, who, actor=actor, enable=disabled)
                st.success(f"{who} {'enabled' if disabled else 'disabled'}.")

    st.subheader("API keys")
    keys = list_keys(db)
    if keys:
        st.dataframe(pd.DataFrame([{k: r[k] for k in ("key_id", "owner", "scopes", "created_at", "created_by")}
                                   for r in keys]), hide_index=True, width="stretch", key="keys_table")
        kid = st.selectbox("Key", [k["key_id"] for k in keys], key="admin_key")
        if st.button("Revoke", key="admin_revoke"):
            try:
                revoke_key(db, kid, actor=actor)
                st.success(f"Key {kid} revoked.")
            except TrilliumError as exc:
                st.error(str(exc))
    else:
        st.info("No API key. Make one with `trillium keys create --owner NAME --role ROLE`.")
