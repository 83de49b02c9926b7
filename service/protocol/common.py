"""Pieces both HTTP protocols share: the data plane, model resolution, timeouts, JSON replies."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata
from typing import Annotated, Any

import orjson
from fastapi import Path, Request
from starlette.responses import Response

from service.dataplane import DataPlane
from service.errors import InvalidInput
from service.protocol.errors import ErrorStyle
from service.protocol.http import HttpRequest, Reply
from service.protocol.schemas import ErrorBody
from service.runtime.model import ModelRuntime
from service.runtime.repository import ModelRepository
from service.runtime.state import ServiceState


def _package_version() -> str:
    try:
        return metadata.version("watchtime")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


SERVER_VERSION = _package_version()
"""The installed package's version, reported by ``/v2`` and the OpenAPI document."""

Version = Annotated[str, Path(pattern=r"^[0-9]+$", description="a model version number")]


def data_plane(request: Request) -> DataPlane:
    plane = request.app.state.data_plane
    assert isinstance(plane, DataPlane)
    return plane


def service_state(request: Request) -> ServiceState:
    return data_plane(request).state


def serving_repository(request: Request) -> ModelRepository:
    """The repository; NotReady (503) while the models are not loaded yet."""
    return data_plane(request).repository


def resolve(request: Request, name: str | None, version: str | None = None) -> ModelRuntime:
    """The model a route names; UnknownModelError (404) or NotReady (503) else."""
    return data_plane(request).model(name, version)


async def documented_route(
    handler: Callable[..., Awaitable[Reply]], request: Request, *args: str | None
) -> Response:
    """A prediction route's body under FastAPI: the same handler the fast path calls.

    Only a host that bypasses :mod:`service.protocol.fastpath` gets here; the body's bytes
    go back to the budget whatever happens.
    """
    plane = data_plane(request)
    held = HttpRequest(request.headers, request.receive, plane.body_budget)
    try:
        reply = await handler(plane, held, *args)
    finally:
        held.release()
    return Response(reply.body, reply.status, reply.headers, media_type=reply.content_type)


_DESCRIBED = {
    "unknown_model": "unknown model",
    "too_large": "body or row count over the limit",
    "queue_full": "queue full: retry after Retry-After seconds",
    "not_ready": "models not loaded yet",
}


def documented_errors(style: ErrorStyle, invalid: str, deadline: str) -> dict[int | str, Any]:
    """The error responses the OpenAPI document lists for a route, at the statuses of the
    protocol's own table (so the document cannot drift from what is answered)."""
    described = {"invalid_input": invalid, **_DESCRIBED, "deadline_exceeded": deadline}
    found = {
        style.statuses[code]: {"model": ErrorBody, "description": text}
        for code, text in described.items()
    }
    return dict(sorted(found.items()))


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


TIMEOUT_HEADER = "x-request-timeout-ms"


def timeout_header_s(headers: Mapping[str, str]) -> float | None:
    """The ``X-Request-Timeout-Ms`` header in seconds (None when absent)."""
    raw = headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InvalidInput.at(
            "X-Request-Timeout-Ms", f"expected a number of milliseconds > 0, got {raw!r}"
        )
    return value / 1000.0


__all__ = ["SERVER_VERSION", "Version"]
