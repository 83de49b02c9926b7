"""Pieces both protocols share: body reader, model resolution, deadlines, batching, metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import Path, Request
from starlette.responses import Response

from service import metrics
from service.config import Settings
from service.protocol.errors import ApiError, from_unknown_model, invalid
from service.runtime.batcher import Batchers, BatchResult, DeadlineExceeded, QueueFull
from service.runtime.inference import (
    Prediction,
    PredictOptions,
    postprocess,
)
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


# --------------------------------------------------------------------------- serving


TIMEOUT_HEADER = "x-request-timeout-ms"


def timeout_header_s(request: Request, status: int) -> float | None:
    """The ``X-Request-Timeout-Ms`` header in seconds (None when absent); bad values are 4xx."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise invalid(
            status, "X-Request-Timeout-Ms", f"expected a number of milliseconds > 0, got {raw!r}"
        )
    return value / 1000.0


def deadline_at(arrival: float, settings: Settings, *timeouts_s: float | None) -> float | None:
    """Monotonic deadline: the tightest of the request's timeouts, else the configured default."""
    given = [t for t in timeouts_s if t is not None]
    if not given and settings.default_timeout_ms:
        given = [settings.default_timeout_ms / 1000.0]
    return arrival + min(given) if given else None


def batchers(request: Request) -> Batchers:
    found = request.app.state.batchers
    assert isinstance(found, Batchers)
    return found


async def run_batched(
    request: Request,
    model: LoadedModel,
    tensors: Mapping[str, np.ndarray],
    n: int,
    deadline: float | None,
    options: PredictOptions,
) -> BatchResult:
    """The model's batcher's answer; a full queue is 429, a missed deadline 504."""
    try:
        return await batchers(request).get(model).predict(tensors, n, deadline, options)
    except QueueFull as exc:
        raise ApiError(
            429,
            f"the queue of model {model.name!r} is full ({exc}); retry later",
            code="queue_full",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from None
    except DeadlineExceeded:
        raise ApiError(
            504, "the request's deadline passed while it was queued", code="deadline_exceeded"
        ) from None


_REASONS = {429: "queue_full", 504: "deadline", 413: "too_large", 400: "invalid", 422: "invalid"}


class RequestRecord:
    """What one prediction request reports to the metrics; ``model`` is set once resolved."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.model = metrics.UNKNOWN_MODEL


@contextmanager
def observe_request(endpoint: str) -> Iterator[RequestRecord]:
    """Count a prediction request by status, time it, and hold it in the in-flight gauge."""
    record = RequestRecord(endpoint)
    started = time.perf_counter()
    status = 500
    metrics.INFLIGHT.inc()
    try:
        yield record
        status = 200
    except ApiError as exc:
        status = exc.status
        raise
    finally:
        metrics.INFLIGHT.dec()
        model = record.model
        metrics.REQUESTS.labels(model, endpoint, str(status)).inc()
        metrics.REQUEST_DURATION.labels(model, endpoint).observe(time.perf_counter() - started)
        reason = _REASONS.get(status)
        if reason is not None:
            metrics.REJECTED.labels(model, reason).inc()


def finish_prediction(
    model: LoadedModel, outcome: BatchResult, options: PredictOptions
) -> Prediction:
    """The request's Prediction: the batch's merged one, else post-processed here.

    Records the post-processing time and the drift histograms; InvalidInput propagates.
    """
    if outcome.prediction is not None:
        result, elapsed = outcome.prediction, outcome.postprocess_s
    else:
        started = time.perf_counter()
        result = postprocess(model, outcome.params, options)
        elapsed = time.perf_counter() - started
    observe_prediction(model, result, elapsed)
    return result


def observe_prediction(model: LoadedModel, result: Prediction, postprocess_s: float) -> None:
    """Post-processing time and the drift histograms of the served numbers."""
    metrics.POSTPROCESS_DURATION.labels(model.name).observe(postprocess_s)
    metrics.observe_many(metrics.PREDICTED_WATCH_TIME.labels(model.name), result.mean)
    metrics.observe_many(metrics.PREDICTED_QUICK_SKIP.labels(model.name), result.quick_skip_prob)
