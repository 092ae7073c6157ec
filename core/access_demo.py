"""The demo's dashboard accounts: one per role, with random passwords, in an owner-only file.

``make demo`` ends with a dashboard that needs a login, so the demo makes ``demo-<role>`` for
every role (the core's admin and viewer, and each installed vertical's) and writes their
passwords to ``$TRILLIUM_HOME/demo-accounts`` (mode 600), whose path it prints; the passwords
themselves are never printed or logged. A rerun gives the existing accounts new passwords.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from rich.console import Console

from trillium.core.config import home_dir

__all__ = ["ACCOUNTS_FILE", "accounts_demo"]

ACCOUNTS_FILE = "demo-accounts"


def accounts_demo(console: Console) -> dict[str, Any]:
    from sqlalchemy import select

    from trillium.core.access import roles
    from trillium.core.db import User, connect
    from trillium.core.users import add_user, disable_user, grant_roles, set_password

    db = connect()
    made: list[tuple[str, str, str]] = []
    for role in sorted(roles()):
        name = f"demo-{role.replace('_', '-')}"
        password = secrets.token_urlsafe(18)  # 144 bits
        with db.session() as s:
            row = s.scalars(select(User).where(User.name == name)).one_or_none()
        if row is None:
            add_user(db, name, password, [role], actor="demo")
        else:  # a rerun: a new password, the role, and enabled again
            set_password(db, name, password, actor="demo")
            if list(row.roles) != [role]:
                grant_roles(db, name, [role], remove=[r for r in row.roles if r != role], actor="demo")
            if row.disabled_at is not None:
                disable_user(db, name, actor="demo", enable=True)
        made.append((name, role, password))
    path = home_dir() / ACCOUNTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# user  role  password (the dashboard's built-in accounts; trillium users passwd NAME changes one)\n")
        for name, role, password in made:
            fh.write(f"{name}  {role}  {password}\n")
    os.chmod(path, 0o600)  # also when the file was there before with a wider mode
    console.print(f"dashboard accounts ({', '.join(n for n, _, _ in made)}): passwords in {path} "
                  "(readable only by you); `trillium dashboard` asks for one")
    return {"accounts": [n for n, _, _ in made], "file": str(path)}
