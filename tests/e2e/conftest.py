"""End-to-end fixtures: `trillium dashboard` served for real, driven by Debian's headless Chromium.

The browser is the system's (``chromium`` on PATH, or ``TRILLIUM_CHROMIUM``), launched by
Playwright's Python package through ``executable_path``: no tool downloads a browser. Under
``make test`` (``TRILLIUM_REQUIRE_BROWSER=1``) a missing browser fails the run; a plain
``pytest`` skips these tests with the reason.

Two servers: one on an empty home (every page must explain itself, never show a traceback) and
one on a home seeded through the domain APIs (``seed.py``). Screenshots of every step go to
``TRILLIUM_E2E_SCREENSHOTS`` (default ``test-artifacts/e2e``, ignored by git).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(home: Path, log: Path) -> Iterator[str]:
    """`trillium dashboard` on HOME (a subprocess, like a user starts it); yields its URL."""
    port = _free_port()
    env = {**os.environ, "TRILLIUM_HOME": str(home), "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",
           "OMP_NUM_THREADS": "1"}
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
    yield from _serve(home, home / "streamlit.log")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A home seeded through the domain APIs, in its own process; returns what was stored."""
    home = tmp_path_factory.mktemp("e2e-seeded")
    env = {**os.environ, "TRILLIUM_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("TRILLIUM_DB_URL", None)
    res = subprocess.run([sys.executable, str(SEED), str(home)], env=env, text=True, capture_output=True,
                         timeout=600, check=False, cwd=home)
    if res.returncode != 0:
        raise RuntimeError(f"seeding failed:\n{res.stdout}\n{res.stderr}")
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "home": home}


@pytest.fixture(scope="module")
def seeded_dashboard(seeded: dict) -> Iterator[str]:
    yield from _serve(seeded["home"], seeded["home"] / "streamlit.log")
