"""The HTTP application: health, readiness, metrics, and each vertical's routes under ``/v1``.

``create_app()`` builds one worker's application (uvicorn calls it in each worker process, so
every worker has its own models, batchers and database pool). The verticals are found through
the ``trillium.verticals`` entry point; the core names none of them.
"""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from trillium.core.access import AuthenticationError, KeyInfo
from trillium.core.db import Database, connect
from trillium.core.service.context import ServiceContext
from trillium.core.service.errors import install_handlers
from trillium.core.service.fastroute import FastRoute
from trillium.core.service.metrics import render
from trillium.core.service.middleware import ServiceMiddleware
from trillium.core.service.settings import ServiceSettings
from trillium.core.verticals import load_ref, verticals

__all__ = ["API_VERSION", "create_app"]

log = logging.getLogger(__name__)

API_VERSION = "v1"
DESCRIPTION = """\
Trillium's inference service: fraud scoring, visual inspection, clinical notes and chest CT,
behind one API. Every route under `/v1` needs an API key in the `X-API-Key` header (make one
with `trillium keys create`); `/healthz`, `/readyz` and `/metrics` need none. Errors are JSON
`{"error", "message", "fields"}`; 503 answers carry `Retry-After`. Every response that a model
produced names the model version.
"""


def create_app(settings: ServiceSettings | None = None, db: Database | None = None) -> FastAPI:
    """One worker's application (``uvicorn --factory trillium.core.service.app:create_app``)."""
    settings = settings or ServiceSettings.from_env()
    db = db or connect()
    ctx = ServiceContext(db, settings)
    available = [v.name for v in verticals() if v.service]
    served = settings.served(available)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ctx.start()
        # The models, frames and modules loaded so far live as long as the worker: moved out of
        # the collector's view, a full collection no longer walks them (measured: p99 latency,
        # benchmarks/serve.py)
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await ctx.astop()

    app = FastAPI(title="Trillium", version="1", description=DESCRIPTION, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
    app.state.ctx = ctx
    install_handlers(app)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Models loaded and database reachable",
             responses={503: {"description": "Not ready: the body says what is missing."}})
    def readyz() -> JSONResponse:
        report: dict[str, Any] = ctx.readiness()
        try:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            report["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            report["database"] = f"unreachable ({type(exc).__name__})"
        ready = report["database"] == "ok" and all(m["ready"] for m in report["models"].values())
        report["status"] = "ready" if ready else "not_ready"
        report["fields"] = served
        return JSONResponse(report, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics of every worker",
             response_class=Response)
    def metrics() -> Response:
        from trillium.core.monitoring.metrics import render as monitoring_gauges

        return Response(render() + monitoring_gauges(db), media_type="text/plain; version=0.0.4; charset=utf-8")

    direct: dict[tuple[str, str], Any] = {}  # (method, path) -> a FastRoute's handler, called by the middleware
    for vertical in verticals():
        if vertical.service and vertical.name in served:
            router = load_ref(vertical.service)(ctx)
            prefix = f"/{API_VERSION}/{vertical.name}"
            app.include_router(router, prefix=prefix, tags=[vertical.name])
            for route in router.routes:
                handler = route.direct_handler() if isinstance(route, FastRoute) else None
                if handler is not None:
                    direct.update({(method, prefix + route.path): handler for method in route.methods})

    async def on_error(request: Request, exc: Exception) -> Response:
        """The application's own exception handlers, for the routes the middleware answers."""
        for cls in type(exc).__mro__:
            handler = app.exception_handlers.get(cls)
            if handler is not None:
                return await handler(request, exc)
        raise exc

    def limit_for(path: str) -> tuple[int, str]:
        if any(path.startswith(p) for p in ctx.large_upload_paths):
            return ctx.limits.upload_bytes, "upload_bytes"
        return ctx.limits.request_bytes, "request_bytes"

    templates: list[tuple[re.Pattern[str], str]] = []
    seen: dict[str, str | None] = {}

    def template_for(path: str) -> str | None:
        if path in seen:
            return seen[path]
        if not templates:
            for tpl in app.openapi()["paths"]:
                templates.append((re.compile("^" + re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(tpl)) + "$"), tpl))
        found = next((tpl for rx, tpl in templates if rx.match(path)), None)
        if len(seen) < 4096:
            seen[path] = found
        return found

    async def authenticate(key: str | None) -> KeyInfo | None:
        """The key's ``KeyInfo`` (the middleware keeps it in the request's state), None if invalid."""
        info = ctx.keys.cached(key)
        if info is not None:
            return info
        try:
            return await run_in_threadpool(ctx.keys.verify, key)
        except AuthenticationError:
            return None

    app.add_middleware(ServiceMiddleware, max_inflight=settings.max_inflight, limit_for=limit_for,
                       template_for=template_for, authenticate=authenticate, direct=direct, on_error=on_error)
    return app
