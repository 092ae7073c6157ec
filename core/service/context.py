"""What a vertical's routes get from the core: auth, audit, models, batchers, limits, readiness.

A vertical's ``service`` entry is a function ``router(ctx: ServiceContext) -> APIRouter``. It asks
``ctx`` for a ``LiveModel`` per model it serves, a ``DynamicBatcher`` in front of each, and the
dependency ``ctx.require("<field>:read")`` on each route; the core mounts the router under
``/v1/<field>``, starts and stops what was asked for, and reports it in ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader

from trillium.core.access import KeyInfo, KeyVerifier
from trillium.core.batching import AsyncBatcher, DynamicBatcher
from trillium.core.db import Database
from trillium.core.registry import ModelRecord, ModelRegistry
from trillium.core.service.live import LiveModel
from trillium.core.service.metrics import BATCH_SIZE, QUEUE_DEPTH
from trillium.core.service.settings import ServiceSettings
from trillium.core.untrusted import Limits, limits

__all__ = ["API_KEY_HEADER", "ServiceContext"]

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                        description="An API key made with `trillium keys create` (shown once).")

class ServiceContext:
    """One per worker process; built by ``create_app``."""

    def __init__(self, db: Database, settings: ServiceSettings, registry: ModelRegistry | None = None) -> None:
        self.db = db
        self.settings = settings
        self.registry = registry or ModelRegistry(db)
        self.keys = KeyVerifier(db, settings.key_cache_seconds)
        self.models: dict[str, LiveModel] = {}
        self.batchers: dict[str, DynamicBatcher | AsyncBatcher] = {}
        self._async_shutdown: list[Callable[[], Any]] = []
        self._startup: list[Callable[[], None]] = []
        self._shutdown: list[Callable[[], None]] = []
        self.limits: Limits = limits()
        self.large_upload_paths: list[str] = []

    def allow_large_upload(self, path: str) -> None:
        """Let requests to ``path`` (full, e.g. ``/v1/<field>/studies``) carry up to the ``upload_bytes``
        limit rather than ``request_bytes`` (a zipped CT study is larger than any JSON request)."""
        self.large_upload_paths.append(path)

    # ------------------------------------------------------------------ access
    def require(self, scope: str) -> Any:
        """A FastAPI dependency: the request's ``KeyInfo`` if its key holds ``scope`` (401 / 403 otherwise)."""

        async def dependency(request: Request, key: str | None = Security(_api_key)) -> KeyInfo:
            # async, so a request costs no thread hop; only a cache miss reads the database (in a thread)
            info = getattr(request.state, "key", None) or await self.key_of(key)
            info.require(scope)
            request.state.key = info
            return info

        dependency.__name__ = f"require_{scope.replace(':', '_')}"
        return Depends(dependency)

    async def key_of(self, key: str | None) -> KeyInfo:
        """The ``KeyInfo`` of an API key: from the verifier's cache, else the database (in a thread)."""
        return self.keys.cached(key) or await run_in_threadpool(self.keys.verify, key)

    async def request_key(self, request: Request, scope: str) -> KeyInfo:
        """The request's key, verified by the middleware (or here), if it holds ``scope``."""
        info = getattr(request.state, "key", None) or await self.key_of(request.headers.get("x-api-key"))
        info.require(scope)
        return info

    def audit(self, request: Request, key: KeyInfo, action: str, target: str = "", **details: Any) -> None:
        """Record who (the key's owner and id), from where (client address), did what to which object."""
        client = request.client.host if request.client else ""
        self.db.audit(action, target=target, actor=key.owner, key_id=key.key_id, client=client,
                      route=request.url.path, **details)

    # ------------------------------------------------------------------ models
    def live_model(self, name: str, load: Callable[[ModelRecord, Any], Any], *, alias: str = "production",
                   on_switch: Callable[[Any, ModelRecord], None] | None = None) -> LiveModel:
        """A ``LiveModel`` following ``name``'s ``alias``, started with the service."""
        live = LiveModel(name, alias, load, registry=self.registry, reload_seconds=self.settings.reload_seconds,
                         on_switch=on_switch)
        self.models[live.label] = live
        self._startup.append(live.start)
        self._shutdown.append(live.stop)
        return live

    def batcher(self, name: str, fn: Callable[[Any], Any], *, stack: bool = True,
                max_batch_size: int | None = None, max_queue_size: int = 1024,
                mode: str | None = None) -> DynamicBatcher | AsyncBatcher:
        """A batcher named ``name`` whose batch sizes and queue depth go to ``/metrics``.

        ``mode``: ``"thread"`` (``DynamicBatcher``: ``fn`` in a thread of its own, which suits a
        model that releases the interpreter lock, as torch does) or ``"async"`` (``AsyncBatcher``:
        ``fn`` in the event loop's thread, no thread switch per request; ``stack=False`` only);
        default: the server's ``--batcher`` setting."""
        hist = BATCH_SIZE.labels(name)
        depth = QUEUE_DEPTH.labels(name)
        mode = mode or self.settings.batcher
        size = max_batch_size or self.settings.max_batch

        def counted(batch: Any) -> Any:
            n = len(batch) if not stack else (batch[0] if isinstance(batch, tuple) else batch).shape[0]
            hist.observe(n)
            out = fn(batch)
            depth.set(b.pending)
            return out

        b: DynamicBatcher | AsyncBatcher
        if mode == "async" and not stack:
            b = AsyncBatcher(counted, name=name, max_batch_size=size, max_delay_ms=self.settings.batch_delay_ms,
                             max_queue_size=max_queue_size)
            self._async_shutdown.append(b.close)
        else:
            b = DynamicBatcher(counted, stack=stack, name=name, max_batch_size=size,
                               max_delay_ms=self.settings.batch_delay_ms, max_queue_size=max_queue_size)
            self._shutdown.append(lambda: b.close(drain=True, timeout=30))
        self.batchers[name] = b
        return b

    @staticmethod
    async def run_batched(batcher: DynamicBatcher | AsyncBatcher, item: Any) -> Any:
        """Submit ``item`` and await its result without blocking the event loop.

        A full queue raises ``OverloadedError`` at once (HTTP 503 with Retry-After)."""
        if isinstance(batcher, AsyncBatcher):
            return await batcher.submit(item)
        return await asyncio.wrap_future(batcher.submit(item))

    def on_startup(self, fn: Callable[[], None]) -> None:
        self._startup.append(fn)

    def on_shutdown(self, fn: Callable[[], None]) -> None:
        self._shutdown.append(fn)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for fn in self._startup:
            fn()

    async def astop(self) -> None:
        """Drain the event-loop batchers (their requests finish), then ``stop()``."""
        for close in self._async_shutdown:
            try:
                await close()
            except Exception:  # a failed step must not keep the others from running
                log.exception("service shutdown step failed")
        self.stop()

    def stop(self) -> None:
        for fn in reversed(self._shutdown):
            try:
                fn()
            except Exception:  # a failed step must not keep the others from running
                log.exception("service shutdown step failed")

    def readiness(self) -> dict[str, Any]:
        models = {label: {"ready": m.ready, "version": m.version, "error": m.error, "backends": m.backends}
                  for label, m in self.models.items()}
        return {"models": models}
