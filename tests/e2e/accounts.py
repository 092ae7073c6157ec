"""The browser tests' accounts, in a module of their own: pytest imports conftest.py under a name of
its own, so constants made there at import would differ from those a test module imports."""

from __future__ import annotations

import secrets

# one account per role, with passwords made for this run (the secrets test looks for them in logs and pages)
ACCOUNTS = {role: (f"e2e-{role.replace('_', '-')}", secrets.token_urlsafe(18))
            for role in ("admin", "viewer", "fraud_analyst", "clinician", "quality_engineer")}
LOCKABLE = ("e2e-lockable", secrets.token_urlsafe(18))  # the account the lock-out test locks
# the identity provider's user, with the role in its "roles" claim
OIDC_USER = {"sub": "oidc-carol", "email": "carol@example.org", "roles": ["clinician"]}
