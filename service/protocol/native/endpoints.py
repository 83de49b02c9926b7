"""The native JSON API's endpoints: ``/v1`` prediction and model routes, ``/healthz``,
``/readyz``.

A prediction goes: read the body (:mod:`service.protocol.http`) -> decode it
(:mod:`.codec`, on the event loop, or on the decoding thread when it is large) -> the data
plane, which batches its rows with other requests' -> encode the answer. Any failure becomes
the native error body, with the status the native table gives its code.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.dataplane import DataPlane
from service.protocol.common import (
    Version,
    documented_errors,
    documented_route,
    json_response,
    resolve,
    service_state,
    serving_repository,
    timeout_header_s,
)
from service.protocol.errors import NATIVE, as_service_error
from service.protocol.http import HttpRequest, Reply
from service.protocol.manifest_view import published_manifest
from service.protocol.native.codec import decode_request, encode_response
from service.protocol.schemas import (
    HealthBody,
    ModelList,
    PredictResponse,
    ReadyBody,
    predict_request_body,
)
from service.runtime.model import ModelRuntime
from service.runtime.repository import ModelRepository


def model_summary(model: ModelRuntime, default: bool) -> dict[str, Any]:
    meta = model.metadata()
    summary = {k: meta[k] for k in ("name", "version", "family", "description")}
    summary["default"] = default
    summary["quick_skip_threshold_s"] = meta["quick_skip_threshold_s"]
    summary["feature_columns"] = [column["name"] for column in meta["inputs"]]
    return summary


ERRORS = documented_errors(
    NATIVE,
    invalid="malformed or invalid input: field and row named",
    deadline="deadline (X-Request-Timeout-Ms) passed in queue",
)

router = APIRouter()


async def serve_predict(
    plane: DataPlane, request: HttpRequest, name: str | None, version: str | None
) -> Reply:
    """A native prediction, from the request's headers and body to the reply to send."""
    arrival = time.monotonic()
    form = "features"
    with plane.observe("predict") as record:
        try:
            model = plane.model(name, version)
            record.model = model.name
            timeout = timeout_header_s(request.headers)
            deadline = plane.deadline(arrival, timeout)
            body = await request.body(plane.settings.max_body_bytes)
            decoded = await plane.decode(
                decode_request,
                model,
                body,
                plane.settings.max_request_rows,
                plane.admission(model),
                plane.settings.max_curve_values,
                plane.fillable(model),
            )
            form = decoded.form
            result = await plane.infer(
                model, decoded.columns, decoded.n, decoded.options, deadline, request.disconnected()
            )
            reply = Reply(200, encode_response(model, result, decoded.options))
        except Exception as exc:  # every failure becomes the protocol's error body
            reply = Reply.error(as_service_error(exc, form), NATIVE)
        record.status = reply.status
    return reply


async def _documented_predict(request: Request, name: str | None, version: str | None) -> Response:
    """The FastAPI route's body: the same handler (hosts that bypass the fast path)."""
    return await documented_route(serve_predict, request, name, version)


PREDICT_DOC = {
    "response_model": None,
    "responses": {200: {"model": PredictResponse}, **ERRORS},
    "openapi_extra": predict_request_body(),
    "tags": ["predict"],
}


@router.post("/v1/predict", summary="Predict with the default model", **PREDICT_DOC)  # type: ignore[arg-type]
async def predict_default(request: Request) -> Response:
    """Watch-time distribution summaries for a batch of rows, from the default model."""
    return await _documented_predict(request, None, None)


@router.post("/v1/models/{name}/predict", summary="Predict with a model", **PREDICT_DOC)  # type: ignore[arg-type]
async def predict_model(request: Request, name: str) -> Response:
    """Watch-time distribution summaries from the highest version of model ``name``."""
    return await _documented_predict(request, name, None)


@router.post(
    "/v1/models/{name}/versions/{version}/predict",
    summary="Predict with one model version",
    **PREDICT_DOC,  # type: ignore[arg-type]
)
async def predict_model_version(request: Request, name: str, version: Version) -> Response:
    """Watch-time distribution summaries from model ``name`` at ``version``."""
    return await _documented_predict(request, name, version)


@router.get(
    "/v1/models",
    response_model=None,
    responses={200: {"model": ModelList}, 503: ERRORS[503]},
    tags=["models"],
)
async def list_models(request: Request) -> Response:
    """Every loaded model and version, and which one ``/v1/predict`` serves."""
    repository = serving_repository(request)
    default = repository.default()
    models = [model_summary(m, m is default) for m in repository]
    return json_response({"default": repository.default_name, "models": models})


def _model_detail(model: ModelRuntime, repository: ModelRepository, request: Request) -> Response:
    summary = model_summary(model, model is repository.default())
    summary["versions"] = repository.versions(model.name)
    full = request.app.state.settings.publish_vocabularies
    summary["manifest"] = published_manifest(model.manifest, full)
    return json_response(summary)


@router.get("/v1/models/{name}", response_model=None, responses=ERRORS, tags=["models"])
async def get_model(request: Request, name: str) -> Response:
    """A model's summary, its versions and its manifest (vocabularies as size and hash)."""
    model = resolve(request, name)
    return _model_detail(model, serving_repository(request), request)


@router.get(
    "/v1/models/{name}/versions/{version}", response_model=None, responses=ERRORS, tags=["models"]
)
async def get_model_version(request: Request, name: str, version: Version) -> Response:
    """One model version's summary and manifest."""
    model = resolve(request, name, version)
    return _model_detail(model, serving_repository(request), request)


@router.get("/healthz", response_model=HealthBody, tags=["health"])
async def healthz() -> Response:
    """Liveness: the process answers HTTP."""
    return json_response({"live": True})


@router.get(
    "/readyz", response_model=ReadyBody, responses={503: {"model": ReadyBody}}, tags=["health"]
)
async def readyz(request: Request) -> Response:
    """Readiness: every model loaded and warmed up, and no shutdown under way.

    With ``WATCHTIME_STRICT_MODELS=false``, ``failed_models`` lists the refused versions.
    """
    state = service_state(request)
    refused = state.repository.failures if state.repository is not None else []
    failed = [{"model": f.name, "version": f.version} for f in refused]
    body = {"ready": state.ready, "failed_models": failed} if failed else {"ready": state.ready}
    return json_response(body, 200 if state.ready else 503)
