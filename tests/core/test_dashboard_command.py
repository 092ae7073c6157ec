"""`trillium dashboard` as a supervisor runs it: started, answering, and gone on SIGTERM.

The command used to start Streamlit as a child and wait; a SIGTERM to `trillium` then left the
child serving on the port (seen as orphaned servers after the browser tests). The command now
replaces itself with Streamlit, so the signal reaches the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_sigterm_to_the_dashboard_command_stops_the_server(tmp_path: Path) -> None:
    port = _free_port()
    health = f"http://127.0.0.1:{port}/_stcore/health"
    env = {**os.environ, "TRILLIUM_HOME": str(tmp_path), "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"}
    env.pop("TRILLIUM_DB_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "trillium.core.cli", "dashboard", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _answers(health):
            assert proc.poll() is None, f"the dashboard exited with {proc.returncode}"
            assert time.monotonic() < deadline, "the dashboard did not answer in 120 s"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _answers(health) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _answers(health), "the server still answers after SIGTERM to `trillium dashboard`"
    finally:
        # whatever happened, leave nothing of the session behind
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
