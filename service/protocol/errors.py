"""Errors as HTTP responses: one status table and one body shape per protocol.

The native routes answer ``{"error": message, "code": ..., "field": ..., "row": ...}`` and
invalid input is 422; the Open Inference Protocol's routes answer ``{"error": message}`` and
invalid input is 400, as that protocol prescribes. Everything else has one status on both.
FastAPI's own validation errors and Starlette's 404/405 go through here too, so a client
parses one format whatever went wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.errors import (
    FrameworkError,
    InternalError,
    InvalidInput,
    ServiceError,
    TooLarge,
)

log = logging.getLogger("watchtime.protocol")

V2_PREFIX = "/v2"

CLIENT_GONE_STATUS = 499
"""Status recorded for a request whose client disconnected (nginx's convention)."""

_COMMON_STATUS: dict[str, int] = {
    "too_large": 413,
    "unsupported_encoding": 415,
    "unauthorized": 401,
    "unknown_model": 404,
    "model_control_disabled": 400,
    "model_unservable": 400,
    "queue_full": 429,
    "body_budget_full": 503,
    "not_ready": 503,
    "feature_store_unavailable": 503,
    "deadline_exceeded": 504,
    "client_gone": CLIENT_GONE_STATUS,
    "internal": 500,
}
_INVALID_CODES = ("invalid_input", "malformed_json", "too_long")


def _native_body(err: ServiceError) -> bytes:
    return orjson.dumps(
        {"error": err.message, "code": err.code, "field": err.field, "row": err.row}
    )


def _v2_body(err: ServiceError) -> bytes:
    return orjson.dumps({"error": err.message})


@dataclass(frozen=True)
class ErrorStyle:
    """How one protocol answers an error: its status per code and its body."""

    name: str
    statuses: Mapping[str, int]
    body: Callable[[ServiceError], bytes]

    def status(self, err: ServiceError) -> int:
        if isinstance(err, FrameworkError):
            return err.status
        return self.statuses.get(err.code, 500)


NATIVE = ErrorStyle(
    "native", {**_COMMON_STATUS, **dict.fromkeys(_INVALID_CODES, 422)}, _native_body
)
V2 = ErrorStyle("v2", {**_COMMON_STATUS, **dict.fromkeys(_INVALID_CODES, 400)}, _v2_body)


def style_of(path: str) -> ErrorStyle:
    """The protocol of a request path."""
    return V2 if path.startswith(V2_PREFIX) else NATIVE


def as_service_error(exc: BaseException, rows_field: str) -> ServiceError:
    """The ServiceError of anything a request may raise.

    ``rows_field`` names what the client's rows were sent as (``features``, ``instances``,
    ``inputs``), so that a fault in a row names the field as the client wrote it.
    """
    if isinstance(exc, ServiceError):
        # Without its traceback: the caller keeps the error in a local of the frame that
        # caught it, which the traceback holds in turn; that cycle would keep every frame's
        # locals (the request body among them) until the cyclic garbage collector runs.
        return exc.in_rows(rows_field).with_traceback(None)
    if isinstance(exc, MemoryError):
        return TooLarge("the request needs more memory than the server has")
    log.error("unhandled error in a prediction", exc_info=exc)
    return InternalError()


def error_response(request: Request, err: ServiceError) -> Response:
    """The JSON error response for ``request``'s protocol."""
    style = style_of(request.url.path)
    return Response(
        style.body(err),
        status_code=style.status(err),
        media_type="application/json",
        headers=err.headers,
    )


_FRAMEWORK_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 503: "not_ready"}


def install_error_handlers(app: FastAPI) -> None:
    """Route every error, ours and the framework's, through :func:`error_response`."""

    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return error_response(request, exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ())]
        field = ".".join(loc[1:] if loc and loc[0] in ("body", "path", "query") else loc)
        return error_response(request, InvalidInput.at(field or "request", str(first["msg"])))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _FRAMEWORK_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        err = FrameworkError(exc.status_code, str(exc.detail), code, headers)
        return error_response(request, err)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # A defect, not bad input: log it with the traceback, answer without internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, InternalError())

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
