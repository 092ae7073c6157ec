"""The HTTP service, started as a real subprocess (``trillium serve``) and driven over HTTP.

``service_home`` is a TRILLIUM_HOME seeded once per session through the domain APIs
(``tests/e2e/seed.py``: a finance model and scored day, stored notes and a CT model with a phantom
study, a manufacturing inspector) with one API key per role written to ``keys.json``.
``service`` is a server on it with 2 workers and the finance online state in the local Redis
under a prefix of its own; tests that break a server (SIGKILL, alias switch) start their own with
``ServiceProcess``.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "tests" / "e2e" / "seed.py"
ROLES = {"admin": "admin", "finance": "fraud_analyst", "medical": "clinician", "manufacturing": "quality_engineer",
         "viewer": "viewer"}
REDIS_URL = os.environ.get("TRILLIUM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_or_fail() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"the service tests need Redis at {REDIS_URL} (several workers share the online state): {exc}")


def run_cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRILLIUM_HOME": str(home)}
    env.pop("TRILLIUM_DB_URL", None)
    proc = subprocess.run([sys.executable, "-m", "trillium.core.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=home, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"trillium {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def copy_home(src: Path, dst: Path) -> Path:
    """A consistent copy of a TRILLIUM_HOME whose database a server has open (SQLite's backup API)."""
    import shutil
    import sqlite3

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("trillium.db*", "run", "serve-*.log"))
    with sqlite3.connect(src / "trillium.db") as a, sqlite3.connect(dst / "trillium.db") as b:
        a.backup(b)
    return dst


class ServiceProcess:
    """``trillium serve`` on a free loopback port, on ``home``; ``stop()`` sends SIGTERM."""

    def __init__(self, home: Path, *, workers: int = 2, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.redis_prefix = f"trillium-test-{uuid.uuid4().hex[:8]}"
        self.log_path = home / f"serve-{self.port}.log"
        full_env = {**os.environ, "TRILLIUM_HOME": str(home), "TRILLIUM_REDIS_URL": REDIS_URL,
                    "TRILLIUM_REDIS_PREFIX": self.redis_prefix, "OMP_NUM_THREADS": "1", **(env or {})}
        full_env.pop("TRILLIUM_DB_URL", None)
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trillium.core.cli", "serve", "--port", str(self.port), "--workers", str(workers),
             "--reload-seconds", "0.5", "--log-level", "info", *args],
            env=full_env, stdout=self._log, stderr=subprocess.STDOUT, cwd=home, start_new_session=True)
        # a pytest stopped early (Ctrl-C, -x, a timeout) must not leave a server running
        atexit.register(self._kill_group)

    def wait_ready(self, timeout: float = 180.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"trillium serve exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                r = httpx.get(self.url + "/readyz", timeout=5)
                if r.status_code == 200:
                    return self
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"trillium serve not ready after {timeout:.0f} s ({last}):\n{self.log()[-4000:]}")

    def _kill_group(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False).stdout
        pids = [int(p) for p in out.split()]
        # uvicorn's supervisor also starts a resource tracker; workers are the ones serving Python's spawn
        return [p for p in pids if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                .replace("\0", " ") and "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if not self._log.closed:
            self._log.close()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{self.redis_prefix}:*", count=1000):
            client.delete(key)
        return self.proc.returncode


@pytest.fixture(scope="session")
def service_home(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A seeded TRILLIUM_HOME: ``{"home", "seed", "keys"}`` (keys: field or role -> API key)."""
    home = tmp_path_factory.mktemp("service-home")
    env = {**os.environ, "TRILLIUM_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("TRILLIUM_DB_URL", None)
    proc = subprocess.run([sys.executable, str(SEED), str(home)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=home, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seed = json.loads(proc.stdout.strip().splitlines()[-1])
    keys = {}
    for name, role in ROLES.items():
        path = home / "keys" / f"{name}.key"
        run_cli(home, "keys", "create", "--owner", f"{name}-caller", "--role", role, "--key-file", str(path))
        keys[name] = path.read_text().strip()
    return {"home": home, "seed": seed, "keys": keys}


@pytest.fixture(scope="session")
def service(service_home: dict) -> Iterator[ServiceProcess]:
    """A 2-worker server on the seeded home, shared by the tests that only call it."""
    redis_or_fail()
    server = ServiceProcess(service_home["home"], workers=2).wait_ready()
    yield server
    server.stop()


def headers(service_home: dict, who: str) -> dict[str, str]:
    return {"X-API-Key": service_home["keys"][who]}
