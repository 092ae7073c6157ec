"""The dashboard's login gate, page by page (AppTest): nothing but the login form without a session,
the form itself, roles deciding pages, idle expiry, logout, a disabled account, the admins' audit
view; each step's audit rows read back from the database. The browser tests
(tests/e2e/test_browser_access.py) drive the same through a real Chromium."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard_login import PASSWORD, logged_in
from trillium import dashboards
from trillium.core.audit import audit_rows
from trillium.core.db import connect
from trillium.core.users import add_user, disable_user

ROOT = Path(dashboards.__file__).parent
PAGES = {"home": ROOT / "Home.py", "finance": ROOT / "pages" / "1_Finance.py",
         "medical": ROOT / "pages" / "2_Medical.py", "manufacturing": ROOT / "pages" / "3_Manufacturing.py"}
TITLES = {"home": "Trillium", "finance": "Finance: fraud alerts",
          "medical": "Medical: CT studies, patients, records and similar cases",
          "manufacturing": "Manufacturing: visual inspection"}


def app(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES[name]), default_timeout=60)


def actions(user: str) -> list[str]:
    return [r["action"] for r in reversed(audit_rows(connect(), user=user))]


@pytest.mark.parametrize("name", list(PAGES))
def test_without_a_session_a_page_shows_only_the_login(name: str) -> None:
    at = app(name).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Trillium"] and [h.value for h in at.subheader] == ["Log in"]
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert not at.dataframe and not at.metric and not at.tabs and not at.sidebar.children
    assert [i.value for i in at.info] == [("No account exists yet. Make the first one with `trillium users add NAME "
                                          "--role admin` (or run `make demo`, which makes one per role).")]


def test_login_form_wrong_then_right_password() -> None:
    add_user(connect(), "ana", PASSWORD, ["clinician"])
    at = app("medical").run()
    at.text_input(key="login_user").input("ana")
    at.text_input(key="login_password").input("not her password")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["wrong user name or password"]
    assert not [t for t in at.title if t.value == TITLES["medical"]]
    at.text_input(key="login_user").input("ana")
    at.text_input(key="login_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert [t.value for t in at.title] == [TITLES["medical"]]
    assert any("Signed in as **ana** (clinician)" in m.value for m in at.sidebar.markdown)
    assert actions("ana") == ["user.login_failed", "user.login"]
    assert audit_rows(connect(), user="ana")[0]["origin"] == "localhost"


def test_roles_decide_pages() -> None:
    at = logged_in(app("finance"), ("clinician",), name="cy").run()
    assert next(e.value for e in at.error).startswith("Your role (clinician) does not open this page")
    assert not at.dataframe and not at.metric and TITLES["finance"] not in [t.value for t in at.title]
    assert actions("cy")[-1] == "access.denied"
    at = logged_in(app("medical"), ("clinician",), name="cy").run()
    assert not at.exception and not at.error and TITLES["medical"] in [t.value for t in at.title]
    at = logged_in(app("manufacturing"), ("fraud_analyst",), name="fa").run()
    assert at.error and not at.metric


def test_idle_session_ends_and_logout() -> None:
    at = logged_in(app("home"), ("viewer",), name="vi")
    at.session_state["_trillium_user"] = {"name": "vi", "source": "local", "last_seen": time.time() - 16 * 60}
    at.run()
    assert [h.value for h in at.subheader] == ["Log in"]
    assert any("session ended after 15 minutes" in i.value for i in at.info)
    assert actions("vi")[-1] == "user.session_expired"
    at = logged_in(app("home"), ("viewer",), name="vi").run()
    assert [t.value for t in at.title] == ["Trillium"] and at.metric
    at.sidebar.button(key="logout").click().run()
    assert [h.value for h in at.subheader] == ["Log in"] and not at.metric
    assert actions("vi")[-1] == "user.logout"


def test_disabled_account_is_out_at_its_next_click() -> None:
    at = logged_in(app("home"), ("viewer",), name="dan").run()
    assert at.metric
    disable_user(connect(), "dan")
    at.run()
    assert [h.value for h in at.subheader] == ["Log in"] and not at.metric
    assert actions("dan")[-1] == "user.session_revoked"


def test_admins_see_the_latest_audit_entries_and_the_accounts() -> None:
    at = logged_in(app("home"), ("viewer",), name="vi").run()
    assert "Latest audit entries" not in [h.value for h in at.subheader]
    at = logged_in(app("home"), ("admin",), name="root").run()
    assert not at.exception
    assert [h.value for h in at.subheader][-3:] == ["Latest audit entries", "Users", "API keys"]
    audit = next(d.value for d in at.dataframe if "action" in d.value.columns)
    assert {("user.add", "vi"), ("user.add", "root")} <= set(zip(audit["action"], audit["target"], strict=True))
    users = next(d.value for d in at.dataframe if "source" in d.value.columns)
    assert sorted(users["name"]) == ["root", "vi"]


def test_first_run_hint_and_an_admin_adds_a_user_from_the_home_page() -> None:
    at = app("home").run()
    assert any("No account exists yet" in i.value and "trillium users add" in i.value for i in at.info)
    at = logged_in(app("home"), ("admin",), name="root").run()
    at.text_input(key="new_user").input("newbie")
    at.multiselect(key="new_roles").select("quality_engineer")
    at.text_input(key="new_password").input(PASSWORD)
    next(b for b in at.button if b.label == "Add").click().run()
    assert not at.exception and any("User newbie added" in m.value for m in at.success)
    rows = audit_rows(connect(), patient=None, action="user.add")
    assert [(r["actor"], r["details"]["roles"]) for r in rows if r["target"] == "newbie"] == [
        ("root", ["quality_engineer"])]
    from trillium.core.users import authenticate

    assert authenticate(connect(), "newbie", PASSWORD).roles == ("quality_engineer",)
