"""Error responses: one JSON shape for every 4xx/5xx, naming the field and the row at fault.

Native routes answer ``{"error": message, "code": ..., "field": ..., "row": ...}``; the Open
Inference Protocol routes answer ``{"error": message}`` as that protocol prescribes. Even
FastAPI's own validation errors and Starlette's 404/405 go through here, so a client parses
one format whatever went wrong.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.dataplane import (
    CLIENT_GONE_STATUS,
    ClientGone,
    DeadlineExceeded,
    NotReady,
    QueueFull,
)
from service.runtime.features import FeatureError
from service.runtime.inference import InvalidInput
from service.runtime.repository import UnknownModelError

log = logging.getLogger("watchtime.protocol")

V2_PREFIX = "/v2"


class ApiError(Exception):
    """An HTTP error with the field and row it is about; raised anywhere in the protocol layer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "invalid_input",
        field: str | None = None,
        row: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.field = field
        self.row = row
        self.headers = headers or {}


def invalid(status: int, field: str, message: str, row: int | None = None) -> ApiError:
    """A 4xx about one request field (and row), with the field named in the message too."""
    where = field + (f", row {row}" if row is not None else "")
    return ApiError(status, f"{where}: {message}", field=field, row=row)


def from_unknown_model(exc: UnknownModelError) -> ApiError:
    return ApiError(404, str(exc), code="unknown_model", field="model")


def from_exception(exc: BaseException, status: int, prefix: str) -> ApiError:
    """The ApiError of anything a prediction may raise; ``status`` is the protocol's 4xx.

    ``prefix`` names what the client's rows were sent as (``features``, ``instances``,
    ``inputs``), so a feature or row error names the field as the client wrote it.
    """
    if isinstance(exc, ApiError):
        # Without its traceback: the caller keeps the error in a local of the frame that
        # caught it, which the traceback holds in turn; that cycle would keep every frame's
        # locals (the request body among them) until the cyclic garbage collector runs.
        return exc.with_traceback(None)
    if isinstance(exc, FeatureError):
        return invalid(status, f"{prefix}.{exc.feature}", exc.message, exc.row)
    if isinstance(exc, InvalidInput):
        field = prefix if exc.field == "features" else exc.field
        return invalid(status, field, exc.message, exc.row)
    if isinstance(exc, UnknownModelError):
        return from_unknown_model(exc)
    if isinstance(exc, QueueFull):
        return ApiError(
            429,
            f"the model's queue is full ({exc}); retry later",
            code="queue_full",
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, DeadlineExceeded):
        return ApiError(
            504, "the request's deadline passed while it was queued", code="deadline_exceeded"
        )
    if isinstance(exc, NotReady):
        return ApiError(503, "models are not loaded yet", code="not_ready")
    if isinstance(exc, ClientGone):
        return ApiError(CLIENT_GONE_STATUS, "the client disconnected", code="client_gone")
    if isinstance(exc, MemoryError):
        return ApiError(413, "the request needs more memory than the server has", code="too_large")
    log.error("unhandled error in a prediction", exc_info=exc)
    return ApiError(500, "internal error", code="internal")


def error_body(err: ApiError, v2: bool) -> bytes:
    """The JSON error body: ``{"error"}`` on the v2 routes, with code, field and row else."""
    if v2:
        return orjson.dumps({"error": err.message})
    return orjson.dumps(
        {"error": err.message, "code": err.code, "field": err.field, "row": err.row}
    )


def error_response(request: Request, err: ApiError) -> Response:
    """The JSON error body for ``request``'s protocol."""
    return Response(
        error_body(err, request.url.path.startswith(V2_PREFIX)),
        status_code=err.status,
        media_type="application/json",
        headers=err.headers,
    )


_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 503: "not_ready"}


def install_error_handlers(app: FastAPI) -> None:
    """Route every error, ours and the framework's, through :func:`error_response`."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(request, exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ())]
        field = ".".join(loc[1:] if loc and loc[0] in ("body", "path", "query") else loc)
        status = 400 if request.url.path.startswith(V2_PREFIX) else 422
        return error_response(request, invalid(status, field or "request", str(first["msg"])))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        err = ApiError(exc.status_code, str(exc.detail), code=code, headers=headers)
        return error_response(request, err)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # A defect, not bad input: log it with the traceback, answer without internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, ApiError(500, "internal error", code="internal"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
