"""One JSON shape for every error the service returns, and the status each failure maps to.

``{"error": <code>, "message": <what went wrong, naming the field or file>, "fields": [...]}``.
An unexpected exception is logged with its traceback in the server's log and answered 500 with a
request id only: no exception text (which might hold data or a secret) reaches the client.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from trillium.core.access import AccessDeniedError, AuthenticationError
from trillium.core.errors import (
    BatcherClosedError,
    DatabaseError,
    InputValidationError,
    OverloadedError,
    TrilliumError,
)
from trillium.core.service.live import ModelNotReadyError
from trillium.core.untrusted import LimitExceededError

__all__ = ["ERROR_RESPONSES", "ErrorBody", "error_response", "install_handlers"]

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx response."""

    error: str = Field(description="A stable code: unauthorized, forbidden, invalid_input, too_large, "
                                   "overloaded, not_ready, not_found, internal.")
    message: str = Field(description="What went wrong, naming the field, file or limit.")
    fields: list[str] = Field(default_factory=list, description="The request fields at fault, as dotted paths.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The request cannot be read (e.g. a malformed multipart body)."},
    401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "The key lacks the route's scope."},
    404: {"model": ErrorBody, "description": "No such object."},
    413: {"model": ErrorBody, "description": "The body, image or archive is past a limit."},
    415: {"model": ErrorBody, "description": "The body's content type is not one the route reads."},
    422: {"model": ErrorBody, "description": "A field is missing, malformed or out of range."},
    503: {"model": ErrorBody, "description": "Overloaded, shutting down, or the model is not loaded: retry "
                                             "after the Retry-After header's seconds."},
}


def error_response(status: int, code: str, message: str, fields: list[str] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=code, message=message, fields=fields or []).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        fields = [_field(e.get("loc", ())) for e in errors]
        parts = [f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:10]]
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        return error_response(422, "invalid_input", "; ".join(parts) + more, fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}.get(
            exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(TrilliumError)
    async def _trillium(_: Request, exc: TrilliumError) -> JSONResponse:
        message = " ".join(str(exc).split())
        if isinstance(exc, AuthenticationError):
            return error_response(401, "unauthorized", message, headers={"WWW-Authenticate": "ApiKey"})
        if isinstance(exc, AccessDeniedError):
            return error_response(403, "forbidden", message)
        if isinstance(exc, LimitExceededError):
            return error_response(413, "too_large", message, [exc.limit_name])
        if isinstance(exc, InputValidationError):
            return error_response(422, "invalid_input", message, list(getattr(exc, "fields", []) or []))
        if isinstance(exc, OverloadedError | BatcherClosedError):
            return error_response(503, "overloaded", message, headers={"Retry-After": "1"})
        if isinstance(exc, ModelNotReadyError | DatabaseError):
            return error_response(503, "not_ready", message, headers={"Retry-After": "5"})
        return error_response(422, "invalid_input", message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.error("request %s %s failed (ref %s)", request.method, request.url.path, ref, exc_info=exc)
        return error_response(500, "internal", f"internal error (reference {ref} in the server log)")
