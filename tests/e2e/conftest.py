"""End-to-end fixtures: `trillium dashboard` served for real, driven by Debian's headless Chromium.

The browser is the system's (``chromium`` on PATH, or ``TRILLIUM_CHROMIUM``), launched by
Playwright's Python package through ``executable_path``: no tool downloads a browser. Under
``make test`` (``TRILLIUM_REQUIRE_BROWSER=1``) a missing browser fails the run; a plain
``pytest`` skips these tests with the reason.

Two servers: one on an empty home (every page must explain itself, never show a traceback) and
one on a home seeded through the domain APIs (``seed.py``). Screenshots of every step go to
``TRILLIUM_E2E_SCREENSHOTS`` (default ``test-artifacts/e2e``, ignored by git).

Every page needs a login: both homes get one built-in account per role (``ACCOUNTS``, random
passwords made per run), and the seeded dashboard also logs in through a real OpenID Connect
provider (oidc-provider-mock, a Flask app on Authlib, served on loopback by the test process)
configured in the home's owner-only ``oidc.toml``. The seeded home and its dashboard are shared by
the session's browser modules (one seeding, one server process).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.accounts import ACCOUNTS, LOCKABLE, OIDC_USER

REPO = Path(__file__).resolve().parents[2]
SEED = Path(__file__).with_name("seed.py")


def chromium_path() -> str | None:
    return os.environ.get("TRILLIUM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _missing(reason: str) -> None:
    if os.environ.get("TRILLIUM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (TRILLIUM_REQUIRE_BROWSER=1: `make test` installs it with apt-get install -y chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = Path(os.environ.get("TRILLIUM_E2E_SCREENSHOTS", REPO / "test-artifacts" / "e2e"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    path = chromium_path()
    if path is None:
        _missing("no Chromium on PATH (apt-get install -y chromium) and TRILLIUM_CHROMIUM unset")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True,
                               args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A fresh browser context (no cookies, so no session) and its page; JavaScript errors fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(60_000)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    yield p
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_accounts(home: Path) -> None:
    """The built-in accounts of ``ACCOUNTS`` (and ``LOCKABLE``) in HOME's database."""
    from trillium.core.db import connect, reset_connections
    from trillium.core.users import add_user

    db = connect(f"sqlite:///{home / 'trillium.db'}")
    for role, (name, password) in ACCOUNTS.items():
        add_user(db, name, password, [role], actor="e2e")
    add_user(db, LOCKABLE[0], LOCKABLE[1], ["viewer"], actor="e2e")
    reset_connections()


def _serve(home: Path, log: Path, port: int | None = None) -> Iterator[str]:
    """`trillium dashboard` on HOME (a subprocess, like a user starts it); yields its URL."""
    port = port or _free_port()
    env = {**os.environ, "TRILLIUM_HOME": str(home), "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",
           "OMP_NUM_THREADS": "1", "AUTHLIB_INSECURE_TRANSPORT": "1"}
    env.pop("TRILLIUM_DB_URL", None)
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "trillium.core.cli", "dashboard", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited ({proc.returncode}):\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the dashboard did not answer in 120 s:\n{log.read_text()}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def empty_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("e2e-empty")
    add_accounts(home)
    yield from _serve(home, home / "streamlit.log")


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[str]:
    """A real OpenID Connect provider on loopback (its authorize page lists OIDC_USER to click)."""
    try:
        from oidc_provider_mock import User, run_server_in_thread
    except ImportError:
        _missing("the oidc-provider-mock package is not installed (pip install -e '.[dev]')")
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain http on loopback
    user = User(sub=OIDC_USER["sub"], claims={k: v for k, v in OIDC_USER.items() if k != "sub"})
    with run_server_in_thread(user_claims=[user]) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A home seeded through the domain APIs, in its own process; returns what was stored."""
    home = tmp_path_factory.mktemp("e2e-seeded")
    env = {**os.environ, "TRILLIUM_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("TRILLIUM_DB_URL", None)
    res = subprocess.run([sys.executable, str(SEED), str(home)], env=env, text=True, capture_output=True,
                         timeout=600, check=False, cwd=home)
    if res.returncode != 0:
        raise RuntimeError(f"seeding failed:\n{res.stdout}\n{res.stderr}")
    add_accounts(home)
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "home": home}


@pytest.fixture(scope="session")
def seeded_dashboard(seeded: dict, oidc_provider: str) -> Iterator[str]:
    """The seeded home's dashboard, with built-in accounts and the OIDC provider's logins."""
    home, port = seeded["home"], _free_port()
    oidc = home / "oidc.toml"
    oidc.write_text(f"""[auth]
redirect_uri = "http://localhost:{port}/oauth2callback"
cookie_secret = "{secrets.token_urlsafe(32)}"
client_id = "trillium-dashboard"
client_secret = "{secrets.token_urlsafe(24)}"
server_metadata_url = "{oidc_provider}/.well-known/openid-configuration"

[trillium]
role_claim = "roles"
name_claim = "email"
provider_label = "the test identity provider"
""")
    oidc.chmod(0o600)
    yield from _serve(home, home / "streamlit.log", port)
