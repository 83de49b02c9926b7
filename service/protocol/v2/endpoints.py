"""The Open Inference Protocol (KServe v2) REST endpoints: server and model metadata,
health, and inference over the data plane (see :mod:`.codec` for the wire format)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.dataplane import DataPlane
from service.protocol.common import (
    SERVER_VERSION,
    Version,
    documented_errors,
    documented_route,
    json_response,
    resolve,
    service_state,
    serving_repository,
    timeout_header_s,
)
from service.protocol.errors import V2, as_service_error
from service.protocol.http import HttpRequest, Reply
from service.protocol.schemas import v2_request_body
from service.protocol.v2.codec import (
    HEADER_LENGTH,
    decode_request,
    encode_response,
    metadata_document,
)
from service.runtime.model import ModelRuntime

router = APIRouter(prefix="/v2", tags=["v2"])


@router.get("")
async def server_metadata() -> Response:
    """Server name, version and the protocol extensions it implements."""
    return json_response(
        {
            "name": "watchtime",
            "version": SERVER_VERSION,
            "extensions": ["binary_tensor_data", "model_repository"],
        }
    )


@router.get("/health/live")
async def live() -> Response:
    """Liveness."""
    return json_response({"live": True})


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    """Readiness (false during loading and from the start of a shutdown)."""
    state = service_state(request)
    return json_response({"ready": state.ready}, 200 if state.ready else 503)


def _metadata(model: ModelRuntime, request: Request) -> Response:
    versions = serving_repository(request).versions(model.name)
    return json_response(metadata_document(model, versions))


@router.get("/models/{name}")
async def model_metadata(request: Request, name: str) -> Response:
    """Inputs (one per raw feature column) and outputs of the model's highest version."""
    return _metadata(resolve(request, name), request)


@router.get("/models/{name}/versions/{version}")
async def model_version_metadata(request: Request, name: str, version: Version) -> Response:
    """Inputs and outputs of one model version."""
    return _metadata(resolve(request, name, version), request)


def _model_ready(request: Request, name: str, version: str | None) -> Response:
    model = resolve(request, name, version)
    ok = service_state(request).ready
    return json_response({"name": model.name, "ready": ok}, 200 if ok else 503)


@router.get("/models/{name}/ready")
async def model_ready(request: Request, name: str) -> Response:
    """Whether the model serves (loaded, warmed up, no shutdown under way)."""
    return _model_ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready")
async def model_version_ready(request: Request, name: str, version: Version) -> Response:
    """Whether this model version serves."""
    return _model_ready(request, name, version)


async def serve_infer(
    plane: DataPlane, request: HttpRequest, name: str, version: str | None
) -> Reply:
    """A v2 inference, from the request's headers and body to the reply to send."""
    arrival = time.monotonic()
    with plane.observe("infer") as record:
        try:
            model = plane.model(name, version)
            record.model = model.name
            header_timeout = timeout_header_s(request.headers)
            body = await request.body(plane.settings.max_body_bytes)
            decoded = await plane.decode(
                decode_request,
                model,
                body,
                request.headers.get(HEADER_LENGTH),
                plane.settings.max_request_rows,
                plane.admission(model),
                plane.fillable(model),
            )
            deadline = plane.deadline(arrival, header_timeout, decoded.timeout_s)
            result = await plane.infer(
                model, decoded.columns, decoded.n, decoded.options, deadline, request.disconnected()
            )
            out, json_length = encode_response(model, decoded, result)
            if json_length is None:
                reply = Reply(200, out)
            else:
                reply = Reply(
                    200,
                    out,
                    "application/octet-stream",
                    {"Inference-Header-Content-Length": str(json_length)},
                )
        except Exception as exc:  # every failure becomes the protocol's error body
            reply = Reply.error(as_service_error(exc, "inputs"), V2)
        record.status = reply.status
    return reply


async def _documented_infer(request: Request, name: str, version: str | None) -> Response:
    """The FastAPI route's body: the same handler (hosts that bypass the fast path)."""
    return await documented_route(serve_infer, request, name, version)


V2_ERRORS = documented_errors(
    V2,
    invalid='invalid input (v2 body: {"error": ...})',
    deadline="deadline (timeout parameter) passed in queue",
)

INFER_DOC: dict[str, Any] = {"openapi_extra": v2_request_body(), "responses": V2_ERRORS}


@router.post("/models/{name}/infer", **INFER_DOC)
async def infer(request: Request, name: str) -> Response:
    """Inference on the model's highest version (JSON or binary tensors)."""
    return await _documented_infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", **INFER_DOC)
async def infer_version(request: Request, name: str, version: Version) -> Response:
    """Inference on one model version."""
    return await _documented_infer(request, name, version)
