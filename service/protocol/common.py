"""Pieces both protocols share: the limited body reader and model resolution."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated, Any

import orjson
from fastapi import Path, Request
from starlette.responses import Response

from service.protocol.errors import ApiError, from_unknown_model
from service.runtime.repository import LoadedModel, ModelRepository, UnknownModelError
from service.runtime.state import ServiceState


def _package_version() -> str:
    try:
        return metadata.version("watchtime")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


SERVER_VERSION = _package_version()
"""The installed package's version, reported by ``/v2`` and the OpenAPI document."""

Version = Annotated[str, Path(pattern=r"^[0-9]+$", description="a model version number")]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body of {declared} bytes exceeds {limit}", code="too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body exceeds {limit} bytes", code="too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def service_state(request: Request) -> ServiceState:
    state = request.app.state.service
    assert isinstance(state, ServiceState)
    return state


def serving_repository(request: Request) -> ModelRepository:
    """The repository, or 503 while the models are not loaded yet."""
    repository = service_state(request).repository
    if repository is None:
        raise ApiError(503, "models are not loaded yet", code="not_ready")
    return repository


def resolve(request: Request, name: str | None, version: str | None = None) -> LoadedModel:
    repository = serving_repository(request)
    try:
        return repository.default() if name is None else repository.get(name, version)
    except UnknownModelError as exc:
        raise from_unknown_model(exc) from None


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")
