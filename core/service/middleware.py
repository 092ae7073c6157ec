"""Pure ASGI middleware in front of every route: body limits, the in-flight bound, metrics.

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``, which costs a task and a stream per request):
measured on this project's 2-core machine the difference is a few hundred microseconds a request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from trillium.core.service.metrics import INFLIGHT, REQUEST_SECONDS, REQUESTS
from trillium.core.untrusted import LimitExceededError

__all__ = ["ServiceMiddleware"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_UNGUARDED = ("/healthz", "/readyz", "/metrics")


async def _send_error(send: Send, status: int, code: str, message: str, fields: list[str],
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": code, "message": message, "fields": fields}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class ServiceMiddleware:
    """Refuse a body past its limit (413, before reading it when Content-Length says so), a request
    past ``max_inflight`` (503 + Retry-After), and record every answer in the Prometheus metrics.

    ``limit_for(path)`` gives the byte limit of a path and the name of the limit; ``template_for(path)``
    the route template it matched, for the metrics' ``route`` label. ``direct`` maps
    ``(method, path)`` to a ``FastRoute`` handler answered here, without FastAPI's own stack;
    ``on_error(request, exc)`` turns what it raises into the application's error response.
    """

    def __init__(self, app: Any, *, max_inflight: int, limit_for: Callable[[str], tuple[int, str]],
                 template_for: Callable[[str], str | None] = lambda _: None,
                 authenticate: Callable[[str | None], Awaitable[Any]] | None = None,
                 direct: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] | None = None,
                 on_error: Callable[[Request, Exception], Awaitable[Response]] | None = None) -> None:
        self.app = app
        self.direct = direct or {}
        self.on_error = on_error
        self.authenticate = authenticate
        self.template_for = template_for
        self.max_inflight = max_inflight
        self.limit_for = limit_for
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        method = scope["method"]
        t0 = time.perf_counter()
        status_box = [500]

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        guarded = not path.startswith(_UNGUARDED)
        try:
            if guarded and self.inflight >= self.max_inflight:
                await _send_error(send_wrapped, 503, "overloaded",
                                  f"the server holds {self.max_inflight} requests in this worker "
                                  f"(TRILLIUM_SERVE_MAX_INFLIGHT); retry after the Retry-After seconds", [],
                                  [(b"retry-after", b"1")])
                return
            # the key first, so a caller without one cannot make a worker read and parse a body
            key = None
            if path.startswith("/v1/") and self.authenticate is not None:
                key = await self.authenticate(_header(scope, b"x-api-key"))
                if key is None:
                    await _send_error(send_wrapped, 401, "unauthorized",
                                      "a valid API key is required in the X-API-Key header (unknown, malformed, "
                                      "revoked or missing)", [], [(b"www-authenticate", b"ApiKey")])
                    return
            limit, limit_name = self.limit_for(path)
            length = _content_length(scope)
            if length is not None and length > limit:
                await _send_error(send_wrapped, 413, "too_large",
                                  f"the request body is {length:,} bytes; the limit {limit_name} is {limit:,} "
                                  f"(TRILLIUM_LIMIT_{limit_name.upper()})", [limit_name])
                return
            if key is not None:  # the routes read it from request.state.key: the key is verified once
                scope.setdefault("state", {})["key"] = key
            self.inflight += 1
            INFLIGHT.inc()
            try:
                handler = self.direct.get((method, path))
                if handler is not None:
                    await self._answer(handler, scope, _counting(receive, limit, limit_name), send_wrapped)
                else:
                    await self.app(scope, _counting(receive, limit, limit_name), send_wrapped)
            finally:
                self.inflight -= 1
                INFLIGHT.dec()
        finally:
            # the route's template (/v1/x/studies/{id}), so that ids never become label values
            template = self.template_for(path) or ("unmatched" if guarded else path)
            REQUESTS.labels(method, template, str(status_box[0])).inc()
            REQUEST_SECONDS.labels(method, template).observe(time.perf_counter() - t0)


    async def _answer(self, handler: Callable[[Request], Awaitable[Response]], scope: Scope, receive: Receive,
                      send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except Exception as exc:
            if self.on_error is None:
                raise
            response = await self.on_error(request, exc)
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _counting(receive: Receive, limit: int, limit_name: str) -> Receive:
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:  # a chunked body with no Content-Length: the error handler answers 413
                raise LimitExceededError("the request body", "bytes", seen, limit_name, limit)
        return message

    return wrapped
