"""The Open Inference Protocol's model repository extension, as Triton defines it.

- ``POST /v2/repository/index`` (body ``{"ready": bool}``, optional; ``GET`` with the query
  ``?ready=true`` too): every version loaded or found in the repository, as
  ``[{"name", "version", "state", "reason"}]`` with Triton's states ``READY``,
  ``UNAVAILABLE`` (the reason says why: refused with the load error, ``unloaded``,
  ``not loaded``) and ``LOADING``.
- ``POST /v2/repository/models/{name}/load``: load or reload every version of ``name`` found
  on disk (and unload its versions whose directory is gone); 200 ``{"name", "load": true,
  "versions"}`` once they serve, 400 with the reason when a version is refused (the others,
  and the version it would have replaced, keep serving), 404 for a name the repository does
  not hold.
- ``POST /v2/repository/models/{name}/unload``: stop serving every version of ``name``
  (requests already running finish); 200 ``{"name", "unload": true}``.

Load and unload are taken in ``WATCHTIME_MODEL_CONTROL=explicit`` only; in the other modes
they answer 400 saying so, as Triton's do. Errors are the v2 ``{"error": ...}`` body.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from service.controlplane import ControlPlane
from service.errors import InvalidInput, MalformedBody, TooLarge
from service.protocol.common import json_response

router = APIRouter(prefix="/v2/repository", tags=["repository"])

MAX_CONTROL_BODY_BYTES = 64 * 1024
"""A repository request's body holds a flag or a few parameters: anything larger is refused."""

#: parameters of Triton's unload request that this server takes (it has no ensembles, so
#: ``unload_dependents`` changes nothing)
UNLOAD_PARAMETERS = frozenset({"unload_dependents"})


def _control_plane(request: Request) -> ControlPlane:
    plane = request.app.state.control_plane
    assert isinstance(plane, ControlPlane)
    return plane


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object; ``{}`` for an empty body (as Triton's clients may send)."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_CONTROL_BODY_BYTES:
            raise TooLarge(f"a repository request body is at most {MAX_CONTROL_BODY_BYTES} bytes")
    if not data.strip():
        return {}
    try:
        body = orjson.loads(bytes(data))
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput.at("body", "expected a JSON object")
    return body


def _parameters(body: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput.at("parameters", "expected an object")
    unknown = sorted(set(parameters) - allowed)
    if unknown:
        raise InvalidInput.at(
            f"parameters.{unknown[0]}",
            "not supported: versions are loaded from the repository's directories as they are",
        )
    return parameters


def _index(request: Request, ready: Any) -> Response:
    if not isinstance(ready, bool):
        raise InvalidInput.at("ready", f"expected true or false, got {ready!r}")
    return json_response(_control_plane(request).index(ready))


@router.get("/index")
async def index(request: Request, ready: bool = Query(False)) -> Response:
    """Every model version loaded or found in the repository, with its state."""
    return _index(request, ready)


@router.post("/index")
async def index_post(request: Request) -> Response:
    """The index, as Triton's clients ask for it (body ``{"ready": bool}``, optional)."""
    body = await _body(request)
    return _index(request, body.get("ready", False))


@router.post("/models/{name}/load")
async def load(request: Request, name: str) -> Response:
    """Load or reload every version of a model (``WATCHTIME_MODEL_CONTROL=explicit``)."""
    _parameters(await _body(request), frozenset())
    plane = _control_plane(request)
    await plane.load(name)
    versions = plane.control.repository.versions(name)
    return json_response({"name": name, "load": True, "versions": versions})


@router.post("/models/{name}/unload")
async def unload(request: Request, name: str) -> Response:
    """Stop serving every version of a model (``WATCHTIME_MODEL_CONTROL=explicit``)."""
    _parameters(await _body(request), UNLOAD_PARAMETERS)
    await _control_plane(request).unload(name)
    return json_response({"name": name, "unload": True})
