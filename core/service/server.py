"""``trillium serve``: uvicorn running ``create_app`` in several worker processes.

Why uvicorn (with httptools and uvloop): the server FastAPI documents, it supervises its worker
processes (a killed worker is replaced, tested), and it drains in-flight requests on SIGTERM. Several
processes share the port (SO_REUSEPORT / the parent's socket), so the interpreter lock of one
does not cap the server. The parent process migrates the database first, so workers never race
a migration, and makes a fresh directory for the workers' Prometheus samples.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace

from trillium.core.config import home_dir
from trillium.core.db import connect
from trillium.core.errors import ConfigError
from trillium.core.service.settings import ServiceSettings

__all__ = ["serve"]

log = logging.getLogger(__name__)

APP = "trillium.core.service.app:create_app"


def serve(settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning",
          graceful_seconds: int = 30) -> None:
    """Run the service until SIGINT or SIGTERM; in-flight requests finish (up to ``graceful_seconds``)."""
    import uvicorn

    if settings.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {settings.workers}")
    if settings.batcher not in ("thread", "async"):
        raise ConfigError(f"--batcher must be thread or async, got {settings.batcher!r}")
    if settings.max_batch < 1:
        raise ConfigError(f"--max-batch must be at least 1, got {settings.max_batch}")
    if settings.workers > 1 and not settings.redis_url:
        settings = replace(settings, redis_url="redis://127.0.0.1:6379/0")
        log.warning("%d workers share one online state: using Redis at %s (set TRILLIUM_REDIS_URL to change)",
                    settings.workers, settings.redis_url)
    if settings.redis_url:
        _check_redis(settings.redis_url)
    connect()  # migrate once, here, before any worker starts
    metrics_dir = tempfile.mkdtemp(prefix="metrics-", dir=_run_dir())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ.update(settings.to_env())
    try:
        uvicorn.run(APP, factory=True, host=host, port=port, workers=settings.workers, log_level=log_level,
                    access_log=False, timeout_graceful_shutdown=graceful_seconds, server_header=False,
                    loop="uvloop", http="httptools")
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _check_redis(url: str) -> None:
    """Fail at once, naming the URL, rather than letting every worker fail at startup."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach it is the same error to the user
        safe = url.split("@")[-1]
        raise ConfigError(f"cannot reach Redis at redis://{safe.split('://')[-1]} ({type(exc).__name__}); "
                          f"several workers keep the finance online state there. Start Redis, set "
                          f"TRILLIUM_REDIS_URL, or run with --workers 1") from None


def _run_dir() -> str:
    path = home_dir() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
