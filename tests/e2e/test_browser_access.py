"""Logins, roles, lock-out, OpenID Connect and secrets, in a real headless Chromium against the
seeded dashboard (shared with test_browser_dashboards.py: one seeding, one server process). Each
step's audit rows are read back from the database.

The OIDC login goes through a real provider (oidc-provider-mock on loopback, see conftest.py):
Streamlit's st.login redirects the browser to it, the test picks the provider's user on its
authorize page, and the provider's ID token carries the role in its ``roles`` claim.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.e2e.accounts import ACCOUNTS, LOCKABLE, OIDC_USER
from tests.e2e.test_browser_dashboards import TITLES, db_url, login, nav_links, settle, shoot

try:
    from playwright.sync_api import Page, expect
except ImportError:  # `make test` requires it (dev extra); a bare pytest without it skips with the reason
    if os.environ.get("TRILLIUM_REQUIRE_BROWSER") == "1":
        raise
    pytest.skip("the playwright package is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = pytest.mark.timeout(900)
expect.set_options(timeout=60_000)


def audit(seeded: dict, user: str) -> list[tuple[str, str, dict]]:
    """(action, target, details) of USER's audit rows, oldest first."""
    from trillium.core.audit import audit_rows
    from trillium.core.db import connect

    return [(r["action"], r["target"], r["details"]) for r in reversed(audit_rows(connect(db_url(seeded["home"])),
                                                                              user=user))]


def test_without_a_session_no_page_shows_anything_but_the_login(page: Page, seeded_dashboard: str, seeded: dict,
                                                                screenshots: Path) -> None:
    secret_bits = [*seeded["finance"]["alerts"][:5], seeded["medical"]["ct_patient"], seeded["medical"]["series_uid"]]
    for path, name in (("", "home"), ("Finance", "finance"), ("Medical", "medical"),
                       ("Manufacturing", "manufacturing")):
        page.goto(f"{seeded_dashboard}/{path}")
        expect(page.get_by_role("heading", name="Log in", exact=True)).to_be_visible()
        settle(page)
        body = page.locator("body").inner_text()
        if name != "home":
            assert TITLES[name] not in body
        assert not [b for b in secret_bits if b in body], "data shown before a login"
        for testid in ("stDataFrame", "stImage", "stMetric", "stTabs", "stPageLink-NavLink"):
            expect(page.locator(f'[data-testid="{testid}"]')).to_have_count(0)
        shoot(page, screenshots, f"access-login-{name}")


def test_a_clinician_does_not_see_finance(page: Page, seeded_dashboard: str, seeded: dict,
                                          screenshots: Path) -> None:
    name, password = ACCOUNTS["clinician"]
    login(page, seeded_dashboard, name, password)
    expect(nav_links(page)).to_have_text(["Home", "Medical", "Monitoring"])
    # opened by its address: the page explains, shows nothing of finance, and the refusal is audited
    login(page, f"{seeded_dashboard}/Finance", name, password)
    expect(page.get_by_text("Your role (clinician) does not open this page")).to_be_visible()
    expect(page.get_by_role("heading", name=TITLES["finance"], exact=True)).to_have_count(0)
    expect(page.locator('[data-testid="stDataFrame"]')).to_have_count(0)
    shoot(page, screenshots, "access-clinician-finance")
    # the medical page opens, and the CT study shown is audited with its patient and where from
    nav_links(page).filter(has_text=re.compile("^Medical$")).click()
    expect(page.get_by_role("heading", name=TITLES["medical"], exact=True)).to_be_visible()
    expect(page.locator('[data-testid="stImage"] img').first).to_be_visible()
    settle(page)
    rows = audit(seeded, name)
    assert [a for a, _, _ in rows[:3]] == ["user.login", "user.login", "access.denied"]
    assert rows[2][1] == "finance:read"
    # every tab's content reaches the browser when the page runs, so each is audited as seen
    assert {a for a, _, _ in rows[3:]} == {"medical.ct.view", "medical.patient.view", "medical.note.view",
                                          "medical.note.similar"}
    view = next(r for r in rows if r[0] == "medical.ct.view")
    assert view[1] == seeded["medical"]["series_uid"] and view[2]["patient"] == seeded["medical"]["ct_patient"]
    assert view[2]["origin"] == "localhost"


def test_a_viewer_cannot_label_and_an_analyst_can(page: Page, seeded_dashboard: str, seeded: dict,
                                                  screenshots: Path) -> None:
    name, password = ACCOUNTS["viewer"]
    login(page, f"{seeded_dashboard}/Finance", name, password)
    heading = page.get_by_role("heading", name=re.compile(r"^Transaction \d+"))
    expect(heading).to_be_visible()
    chosen = heading.inner_text().split()[-1]
    expect(page.get_by_text("Labelling needs the finance:write scope")).to_be_visible()
    expect(page.locator(".st-key-label_fraud, .st-key-label_genuine, .st-key-comment")).to_have_count(0)
    settle(page)
    shoot(page, screenshots, "access-viewer-finance")
    assert [(a, t) for a, t, _ in audit(seeded, name)][-1] == ("finance.alert.view", chosen)
    analyst, pw = ACCOUNTS["fraud_analyst"]
    login(page, f"{seeded_dashboard}/Finance", analyst, pw)
    expect(page.locator(".st-key-label_fraud button")).to_be_visible()
    expect(nav_links(page)).to_have_text(["Home", "Finance", "Monitoring"])


def test_five_wrong_passwords_lock_the_account(page: Page, seeded_dashboard: str, seeded: dict,
                                               screenshots: Path) -> None:
    from trillium.core.db import User, connect

    name, password = LOCKABLE
    page.goto(seeded_dashboard)
    for i in range(1, 6):
        expect(page.get_by_role("heading", name="Log in", exact=True)).to_be_visible()
        settle(page)
        page.locator(".st-key-login_user input").fill(name)
        page.locator(".st-key-login_password input").fill(f"guess number {i}")
        page.get_by_role("button", name="Log in", exact=True).click()
        message = "locked after 5 failed logins" if i == 5 else "wrong user name or password"
        expect(page.locator('[data-testid="stAlert"]').filter(has_text=message)).to_be_visible()
        settle(page)
    shoot(page, screenshots, "access-locked")
    # the right password no longer opens it
    page.locator(".st-key-login_user input").fill(name)
    page.locator(".st-key-login_password input").fill(password)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_text("this account is locked after 5 failed logins")).to_be_visible()
    settle(page)
    expect(page.locator('[data-testid="stSidebar"]').get_by_text("Signed in as")).to_have_count(0)
    with connect(db_url(seeded["home"])).session() as s:
        assert s.scalars(select(User).where(User.name == name)).one().locked_until is not None
    rows = audit(seeded, name)
    assert [a for a, _, _ in rows] == ["user.login_failed"] * 5 + ["user.locked", "user.login_failed"]
    assert [d.get("reason") for _, _, d in rows] == ["wrong password"] * 5 + [None, "locked"]


def test_an_oidc_login_lands_with_the_role_from_its_claim(page: Page, seeded_dashboard: str, seeded: dict,
                                                          oidc_provider: str, screenshots: Path) -> None:
    from trillium.core.db import User, connect

    base = seeded_dashboard.replace("127.0.0.1", "localhost")  # the host of the registered redirect URI
    page.goto(base)
    page.get_by_role("button", name="Log in with the test identity provider").click()
    # the provider's own authorize page: pick its user
    page.wait_for_url(re.compile(rf"^{re.escape(oidc_provider)}/oauth2/authorize"))
    shoot(page, screenshots, "access-oidc-provider")
    page.get_by_role("button", name=OIDC_USER["sub"], exact=True).click()
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text(f"Signed in as {OIDC_USER['email']} (clinician)")).to_be_visible()
    expect(nav_links(page)).to_have_text(["Home", "Medical", "Monitoring"])
    settle(page)
    shoot(page, screenshots, "access-oidc-home")
    with connect(db_url(seeded["home"])).session() as s:
        row = s.scalars(select(User).where(User.name == OIDC_USER["email"])).one()
        assert (row.source, row.roles, row.password_hash) == ("oidc", ["clinician"], None)
    (action, _, details), = audit(seeded, OIDC_USER["email"])
    assert action == "user.login" and details["method"] == "oidc" and details["roles"] == ["clinician"]
    assert details["issuer"].startswith(oidc_provider)


def test_logout_ends_the_session(page: Page, seeded_dashboard: str, seeded: dict) -> None:
    name, password = ACCOUNTS["quality_engineer"]
    login(page, f"{seeded_dashboard}/Manufacturing", name, password)
    expect(page.get_by_role("heading", name=TITLES["manufacturing"], exact=True)).to_be_visible()
    settle(page)
    page.locator(".st-key-logout button").click()
    expect(page.get_by_role("heading", name="Log in", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name=TITLES["manufacturing"], exact=True)).to_have_count(0)
    settle(page)
    assert [a for a, _, _ in audit(seeded, name)][-2:] == ["user.login", "user.logout"]


def test_no_secret_in_any_log_page_or_database_file(page: Page, seeded_dashboard: str, seeded: dict) -> None:
    """The run's passwords, the OIDC client and cookie secrets: in no server log, page or stored byte."""
    import tomllib

    home = Path(seeded["home"])
    oidc = tomllib.loads((home / "oidc.toml").read_text())["auth"]
    secrets_ = [p for _, p in ACCOUNTS.values()] + [LOCKABLE[1], oidc["client_secret"], oidc["cookie_secret"]]
    pages = []
    login(page, seeded_dashboard, *ACCOUNTS["admin"])  # the admin's home lists users, keys and the audit log
    pages.append(page.content())
    for label in ("Finance", "Medical", "Manufacturing"):
        nav_links(page).filter(has_text=re.compile(f"^{label}$")).click()
        expect(page.get_by_role("heading", name=re.compile(label))).to_be_visible()
        settle(page)
        pages.append(page.content())
    files = [home / "streamlit.log", *home.glob("trillium.db*")]
    assert (home / "streamlit.log").stat().st_size > 0
    for secret in secrets_:
        assert not [i for i, html in enumerate(pages) if secret in html], "a secret in a page"
        leaked = [f.name for f in files if secret.encode() in f.read_bytes()]
        assert not leaked, f"a secret in {leaked}"
