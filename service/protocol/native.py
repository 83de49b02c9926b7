"""The native JSON API: ``/v1`` prediction and model routes, ``/healthz``, ``/readyz``.

A request body is parsed by orjson (which refuses ``NaN``/``Infinity`` literals, as JSON
does) and turned into one numpy array per feature column without any Python loop over rows
for the columnar form; the row form is transposed column by column with C-level iteration.
A body is decoded on the event loop (a 256-row body takes about a millisecond), or on the
decoding thread when it is large, so that it does not stall the other connections; the
rows then go to the data plane, which batches them with other requests' rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.dataplane import DataPlane
from service.protocol.common import (
    Version,
    documented_route,
    json_response,
    resolve,
    service_state,
    serving_repository,
    timeout_header_s,
)
from service.protocol.errors import (
    ApiError,
    from_exception,
    invalid,
)
from service.protocol.http import HttpRequest, Reply
from service.protocol.manifest_view import published_manifest
from service.protocol.schemas import (
    ErrorBody,
    HealthBody,
    ModelList,
    PredictResponse,
    ReadyBody,
    predict_request_body,
)
from service.runtime.features import MAX_STRING_CHARS
from service.runtime.inference import (
    InvalidInput,
    Prediction,
    PredictOptions,
)
from service.runtime.repository import LoadedModel, ModelRepository

NATIVE_STATUS = 422
"""Status of invalid input on the native routes (the v2 routes use 400)."""

ALLOWED_KEYS = frozenset(
    {"features", "instances", "quantiles", "intervals", "quick_skip_threshold_s", "return_params"}
)

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

#: Python types a JSON column may hold, per what the manifest reads from it
ALLOWED_TYPES: dict[str, frozenset[type]] = {
    "number": frozenset({int, float, bool, type(None)}),
    "string": frozenset({str, int, float, bool, type(None)}),
}


# --------------------------------------------------------------------------- request body


def parse_json(body: bytes) -> Any:
    """orjson parse; NaN/Infinity literals and trailing garbage are malformed JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            NATIVE_STATUS, f"body: malformed JSON: {exc}", code="malformed_json", field="body"
        ) from None


# --------------------------------------------------------------------------- columns


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _first_row(values: list[Any], predicate: Any) -> int | None:
    """Index of the first value matching ``predicate``; only ever called on an error path."""
    return next((i for i, v in enumerate(values) if predicate(v)), None)


def column_array(field: str, values: Any, kind: str, status: int) -> np.ndarray:
    """One JSON column as a 1-D numpy array, or an error naming the row with a wrong value.

    ``kind`` is "number" or "string": what the manifest's features read from the column. A
    number column must not hold text; a string column accepts integers as their decimal text.
    The element types are collected first, in one C-level pass, so the array is built with
    its final dtype: a string column stays an array of references (a fixed-width text array
    would size every row by the longest value), and each value is held to
    ``MAX_STRING_CHARS``.
    """
    if not isinstance(values, list):
        raise invalid(status, field, f"expected a list of values, got {type(values).__name__}")
    types = set(map(type, values))
    wrong = types - ALLOWED_TYPES[kind]
    if wrong:
        row = _first_row(values, lambda v: type(v) in wrong)
        shown = values[row] if row is not None else None
        if isinstance(shown, (list, dict)):
            raise invalid(status, field, "expected a scalar or null in every row", row)
        want = "a number or null" if kind == "number" else "a string, a number or null"
        raise invalid(status, field, f"expected {want}, got {_clip(shown)}", row)
    if kind == "string":
        if str in types:
            check_string_lengths(field, values, status)
        return np.array(values, dtype=object)
    if types <= {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            pass  # ids beyond int64: as floats they are simply unknown to any vocabulary
    try:  # null -> NaN, the missing-value marker of a float column
        return np.array(values, dtype=np.float64)
    except OverflowError:
        row = _first_row(values, lambda v: abs(v or 0) > 1e308)
        raise invalid(status, field, "number out of range", row) from None


def _clip(value: Any) -> str:
    """A value for an error message, cut short: the message must not echo a huge body."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def check_string_lengths(field: str, values: list[Any], status: int) -> None:
    """An error naming the first text value longer than ``MAX_STRING_CHARS``."""
    longest = max(map(len, filter(str.__instancecheck__, values)), default=0)
    if longest > MAX_STRING_CHARS:
        row = _first_row(values, lambda v: isinstance(v, str) and len(v) > MAX_STRING_CHARS)
        raise ApiError(
            status,
            f"{field}, row {row}: a text value of {longest} characters exceeds the limit of "
            f"{MAX_STRING_CHARS}",
            code="too_long",
            field=field,
            row=row,
        )


def _check_row_limit(prefix: str, n: int, max_rows: int) -> None:
    """413 for a request over the row limit, whichever form it came in."""
    if n > max_rows:
        raise ApiError(
            413,
            f"{prefix}: {n} rows exceed the limit of {max_rows} per request",
            code="too_large",
            field=prefix,
        )


def columnar(
    model: LoadedModel, features: Any, max_rows: int, status: int, prefix: str = "features"
) -> tuple[dict[str, np.ndarray], int]:
    """Arrays of the columns the model reads from a ``{"name": [...], ...}`` object."""
    if not isinstance(features, dict):
        raise invalid(status, prefix, "expected an object of feature columns")
    first: str | None = None
    n = 0
    for source in model.sources:
        if source not in features:
            raise invalid(status, f"{prefix}.{source}", "required feature column is missing")
        values = features[source]
        if not isinstance(values, list):
            got = type(values).__name__
            raise invalid(status, f"{prefix}.{source}", f"expected a list of values, got {got}")
        if first is None:
            first, n = source, len(values)
            _check_row_limit(prefix, n, max_rows)
        elif len(values) != n:
            raise invalid(
                status,
                f"{prefix}.{source}",
                f"column has {len(values)} rows but {first!r} has {n}",
                min(n, len(values)),
            )
    columns = {
        source: column_array(f"{prefix}.{source}", features[source], kind, status)
        for source, kind in model.source_kinds.items()
    }
    return columns, n


def rows_to_columns(
    model: LoadedModel, instances: Any, max_rows: int, status: int, prefix: str = "instances"
) -> tuple[dict[str, np.ndarray], int]:
    """Arrays of the model's columns from a ``[{"name": value, ...}, ...]`` list of rows."""
    if not isinstance(instances, list):
        raise invalid(status, prefix, "expected a list of row objects")
    n = len(instances)
    _check_row_limit(prefix, n, max_rows)
    row = _first_row(instances, lambda v: not isinstance(v, dict)) if n else None
    if row is not None:
        raise invalid(status, prefix, "expected an object of feature values", row)
    columns: dict[str, np.ndarray] = {}
    for source, kind in model.source_kinds.items():
        try:
            values = list(map(itemgetter(source), instances))
        except KeyError:
            missing = _first_row(instances, lambda v, s=source: s not in v)
            raise invalid(
                status, f"{prefix}.{source}", "required feature is missing", missing
            ) from None
        columns[source] = column_array(f"{prefix}.{source}", values, kind, status)
    return columns, n


# --------------------------------------------------------------------------- options


def _number(field: str, value: Any, status: int) -> float:
    if not _is_number(value):
        raise invalid(status, field, f"expected a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise invalid(status, field, "expected a finite number")
    return result


def options_from(doc: Mapping[str, Any], status: int) -> PredictOptions:
    """Validated PredictOptions from the optional request fields."""
    quantiles = doc.get("quantiles")
    levels: list[float] | None = None
    if quantiles is not None:
        if not isinstance(quantiles, list):
            raise invalid(status, "quantiles", "expected a list of levels in (0, 1)")
        levels = [_number(f"quantiles[{i}]", q, status) for i, q in enumerate(quantiles)]
    intervals = doc.get("intervals")
    pairs: list[tuple[float, float | None]] | None = None
    if intervals is not None:
        if not isinstance(intervals, list):
            raise invalid(status, "intervals", "expected a list of [lo, hi] pairs")
        pairs = []
        for i, pair in enumerate(intervals):
            if not isinstance(pair, list) or len(pair) != 2:
                raise invalid(status, f"intervals[{i}]", "expected [lo, hi] (hi may be null)")
            lo = _number(f"intervals[{i}][0]", pair[0], status)
            hi = None if pair[1] is None else _number(f"intervals[{i}][1]", pair[1], status)
            pairs.append((lo, hi))
    threshold = doc.get("quick_skip_threshold_s")
    if threshold is not None:
        threshold = _number("quick_skip_threshold_s", threshold, status)
    return_params = doc.get("return_params", False)
    if not isinstance(return_params, bool):
        raise invalid(status, "return_params", f"expected true or false, got {return_params!r}")
    try:
        return PredictOptions.create(levels, pairs, threshold, return_params)
    except InvalidInput as exc:
        raise from_exception(exc, status, "features") from None


def _row_count(doc: Mapping[str, Any]) -> int:
    """The rows a parsed request claims (0 when it is too malformed to say)."""
    if "features" in doc:
        features = doc["features"]
        if isinstance(features, dict):
            for values in features.values():
                return len(values) if isinstance(values, list) else 0
        return 0
    instances = doc.get("instances")
    return len(instances) if isinstance(instances, list) else 0


@dataclass(frozen=True)
class DecodedPredict:
    """A decoded native request: raw columns, options and the form the client used."""

    columns: dict[str, np.ndarray]
    n: int
    options: PredictOptions
    form: str


def decode_request(
    model: LoadedModel,
    body: bytes,
    max_rows: int,
    admit: Callable[[int], None] | None = None,
) -> DecodedPredict:
    """Columns, options and form of a request body, or a 4xx ApiError.

    ``admit`` is called with the row count as soon as it is known (right after parsing),
    so that a request the queue cannot take is refused before its columns are converted.
    """
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise invalid(NATIVE_STATUS, "body", "expected a JSON object")
    unknown = sorted(set(doc) - ALLOWED_KEYS)
    if unknown:
        raise invalid(NATIVE_STATUS, unknown[0], f"unknown field; allowed: {sorted(ALLOWED_KEYS)}")
    if ("features" in doc) == ("instances" in doc):
        raise invalid(
            NATIVE_STATUS,
            "features",
            "send exactly one of features (columnar) or instances (rows)",
        )
    if admit is not None:
        admit(min(_row_count(doc), max_rows))
    options = options_from(doc, NATIVE_STATUS)
    if "features" in doc:
        columns, n = columnar(model, doc["features"], max_rows, NATIVE_STATUS)
        return DecodedPredict(columns, n, options, "features")
    columns, n = rows_to_columns(model, doc["instances"], max_rows, NATIVE_STATUS)
    return DecodedPredict(columns, n, options, "instances")


# --------------------------------------------------------------------------- response


def encode_prediction(model: LoadedModel, result: Prediction, options: PredictOptions) -> bytes:
    """The response body: numpy arrays straight into orjson, no Python object per row."""
    c = np.ascontiguousarray  # orjson serializes only C-contiguous arrays (a no-op if already)
    body: dict[str, Any] = {
        "model": model.name,
        "version": model.version,
        "family": model.manifest.family,
        "n": result.n,
        "expected_watch_time_s": c(result.mean),
        "point_s": c(result.point),
        "std_s": c(result.std),
        "quick_skip_threshold_s": result.quick_skip_threshold_s,
        "quick_skip_prob": c(result.quick_skip_prob),
    }
    if result.quantiles is not None and options.quantiles is not None:
        body["quantiles"] = {"levels": options.quantiles, "values_s": c(result.quantiles)}
    if result.interval_mass is not None and options.intervals is not None:
        edges = [[lo, hi if math.isfinite(hi) else None] for lo, hi in options.intervals.tolist()]
        body["intervals"] = {"edges_s": edges, "mass": c(result.interval_mass)}
    if result.params is not None:
        body["params"] = {k: c(v) for k, v in result.params.items()}
    return orjson.dumps(body, option=JSON_OPTIONS)


# --------------------------------------------------------------------------- routes


def model_summary(model: LoadedModel, default: bool) -> dict[str, Any]:
    manifest = model.manifest
    return {
        "name": model.name,
        "version": model.version,
        "family": manifest.family,
        "description": manifest.description,
        "default": default,
        "quick_skip_threshold_s": manifest.quick_skip_threshold_s,
        "feature_columns": model.sources,
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown model"},
    413: {"model": ErrorBody, "description": "body or row count over the limit"},
    422: {"model": ErrorBody, "description": "malformed or invalid input: field and row named"},
    429: {"model": ErrorBody, "description": "queue full: retry after Retry-After seconds"},
    503: {"model": ErrorBody, "description": "models not loaded yet"},
    504: {"model": ErrorBody, "description": "deadline (X-Request-Timeout-Ms) passed in queue"},
}

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
            timeout = timeout_header_s(request.headers, NATIVE_STATUS)
            deadline = plane.deadline(arrival, timeout)
            body = await request.body(plane.settings.max_body_bytes)
            decoded = await plane.decode(
                decode_request, model, body, plane.settings.max_request_rows, plane.admission(model)
            )
            form = decoded.form
            result = await plane.infer(
                model, decoded.columns, decoded.n, decoded.options, deadline, request.disconnected()
            )
            reply = Reply(200, encode_prediction(model, result, decoded.options))
        except Exception as exc:  # every failure becomes the protocol's error body
            reply = Reply.error(from_exception(exc, NATIVE_STATUS, form), v2=False)
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


def _model_detail(model: LoadedModel, repository: ModelRepository, request: Request) -> Response:
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
