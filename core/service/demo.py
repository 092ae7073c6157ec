"""The demo's last step: start ``trillium serve``, make one authorised call per field, stop it.

A key for the role ``admin`` is made for the owner ``demo`` and written to
``$TRILLIUM_HOME/demo-api-key`` (readable only by its owner), so the README's curl examples work
after ``make demo``. Each vertical's ``service_demo`` function ``(client) -> str`` makes its call
with an ``httpx.Client`` already pointed at the server with the key; the core names none of them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess  # nosec B404 # our own interpreter, argument lists only
import sys
import time
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from trillium.core.access import create_key
from trillium.core.config import home_dir
from trillium.core.db import connect
from trillium.core.errors import TrilliumError
from trillium.core.verticals import load_ref, verticals

__all__ = ["service_demo"]

KEY_FILE = "demo-api-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_key(key: str) -> str:
    path = home_dir() / KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(path, 0o600)
    return str(path)


def service_demo(console: Console) -> dict[str, Any]:
    """Serve on a free loopback port with one worker, call each field once, stop; a table of answers."""
    t0 = time.perf_counter()
    key, info = create_key(connect(), "demo", role="admin", description="made by trillium demo", created_by="demo")
    key_path = _write_key(key)
    port = _free_port()
    log_path = home_dir() / "demo-serve.log"
    env = {**os.environ, "TRILLIUM_HOME": str(home_dir())}
    with log_path.open("w") as log:
        # our own interpreter running trillium serve, from an argument list (no shell, no user input)
        proc = subprocess.Popen([sys.executable, "-m", "trillium.core.cli", "serve", "--port", str(port),  # nosec B603
                                 "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    answers: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise TrilliumError(f"the demo server exited ({proc.returncode}); see {log_path}")
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TrilliumError(f"the demo server was not ready in 180 s; see {log_path}")
            time.sleep(0.5)
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=120) as client:
            for vertical in verticals():
                if vertical.service_demo:
                    answers[vertical.name] = load_ref(vertical.service_demo)(client)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    table = Table(title=f"service demo ({url}, stopped)")
    table.add_column("field")
    table.add_column("one authorised call")
    for name, answer in answers.items():
        table.add_row(name, answer)
    table.add_row("key", f"{info.key_id} (admin) in {key_path}; start the service with: trillium serve")
    table.add_row("elapsed", f"{time.perf_counter() - t0:.1f} s")
    console.print(table)
    return {"answers": answers, "key_file": key_path, "url": url}
