"""Routes documented by FastAPI but served by a handler of their own, for the hottest paths.

FastAPI solves a route's dependencies on every request: it reads the body, decodes the JSON in
Python, validates it against the body model, then each query parameter and security dependency.
Measured on the finance score route (2 cores): 0.43 ms a request before any scoring, against
0.13 ms for a route with no parameters. A ``FastRoute`` keeps the endpoint's full signature for
the OpenAPI schema (body model, query parameters, API-key security, responses), so clients and
Schemathesis see the same contract, but answers with the handler given to ``served_by``: one
``pydantic-core`` call that parses and validates the JSON bytes, and the key the service's
middleware already verified. The handler must give the same answers as the endpoint; the endpoint stays a
working, slower path: ``TRILLIUM_SERVE_FAST_ROUTES=0`` serves every route through FastAPI's own
handler (the benchmark's baseline, and a test that compares the two paths' answers).
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["FastRoute", "JsonBody", "query_flag", "served_by"]

Handler = Callable[[Request], Awaitable[Response]]
_LEADING_SPACE = re.compile(rb"[ \t\r\n]*")
_TRUE = {"1", "true", "on", "yes", "t", "y"}
_FALSE = {"0", "false", "off", "no", "f", "n"}


class FastRoute(APIRoute):
    """An ``APIRoute`` answered by its endpoint's ``served_by`` handler (see the module doc).

    The service's middleware also calls that handler directly (``direct_handler``), ahead of
    FastAPI's own stack of middleware and router (measured here: a trivial FastAPI route costs
    about 280 µs of CPU a request, the same answer from a bare ASGI callable about 80 µs)."""

    def direct_handler(self) -> Handler | None:
        if os.environ.get("TRILLIUM_SERVE_FAST_ROUTES", "1") == "0":
            return None
        return getattr(self.endpoint, "__trillium_handler__", None)

    def get_route_handler(self) -> Handler:
        handler = self.direct_handler()
        return handler if handler is not None else super().get_route_handler()


def served_by(handler: Handler) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an endpoint (the route's documented signature) as answered by ``handler``."""

    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        endpoint.__trillium_handler__ = handler  # type: ignore[attr-defined]
        return endpoint

    return mark


class JsonBody:
    """Parse and validate a JSON body in one call: an object with ``single``, an array with
    ``many``; errors, a non-JSON content type among them, become FastAPI's
    ``RequestValidationError`` located under ``body`` (422, naming the field)."""

    def __init__(self, single: Any, many: Any) -> None:
        self.single = TypeAdapter(single)
        self.many = TypeAdapter(many)

    def parse(self, request: Request, raw: bytes) -> tuple[Any, bool]:
        """``(value, is_single)``."""
        ctype = request.headers.get("content-type", "")
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):  # 422, as FastAPI's JSON routes answer
            raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",), "input": None,
                                           "msg": f"the body must be JSON (Content-Type: application/json), not "
                                                  f"{media or 'no content type'}"}])
        first = _LEADING_SPACE.match(raw).end()  # no copy of a large body to find its first byte
        start = raw[first:first + 1]
        adapter, single = (self.many, False) if start == b"[" else (self.single, True)
        if start not in (b"[", b"{"):
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "input": None,
                                           "msg": "the body must be a JSON object or array"}])
        try:
            return adapter.validate_json(raw), single
        except ValidationError as exc:
            errors = [dict(e, loc=("body", *e["loc"])) for e in exc.errors(include_url=False, include_input=False)]
            raise RequestValidationError(errors) from None


def query_flag(request: Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter read as FastAPI reads it (1/0, true/false, on/off, yes/no)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RequestValidationError([{"type": "bool_parsing", "loc": ("query", name), "input": None,
                                   "msg": "Input should be a valid boolean, unable to interpret input"}])
