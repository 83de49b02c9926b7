"""Open Inference Protocol (KServe v2) REST routes, JSON and the binary tensor extension.

One input tensor per raw feature column (shape ``[n]`` or ``[n, 1]``), named as the column;
outputs ``expected_watch_time_s``, ``point_s``, ``std_s``, ``quick_skip_prob`` (``[n]``),
``quantiles`` and ``interval_mass`` (``[n, m]``, when the request parameters ``quantiles``
and ``intervals`` ask for them) and ``params.<name>`` with ``return_params``. Tensors cannot
hold null, so NaN in a floating-point input marks a missing value; the JSON form therefore
also accepts the ``NaN`` tokens that the Triton client writes. An integer input (declared
INT64) may be sent as FP64 or FP32 instead, with NaN where a value is missing; the model
metadata's parameter ``nullable_inputs`` names every input that accepts NaN so.

Binary tensor extension: with ``Inference-Header-Content-Length: h`` the first ``h`` bytes
are the JSON header and the rest holds the raw tensors, in input order, little-endian;
``BYTES`` elements are each a 4-byte little-endian length followed by the bytes. Outputs are
binary when the request says so (``binary_data_output`` or per-output ``binary_data``).
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.dataplane import DataPlane
from service.protocol.common import (
    SERVER_VERSION,
    Version,
    documented_route,
    json_response,
    resolve,
    service_state,
    serving_repository,
    timeout_header_s,
)
from service.protocol.errors import ApiError, from_exception
from service.protocol.http import HttpRequest, Reply
from service.protocol.schemas import ErrorBody, v2_request_body
from service.runtime.features import MAX_STRING_CHARS
from service.runtime.inference import (
    InvalidInput,
    Prediction,
    PredictOptions,
)
from service.runtime.repository import LoadedModel

V2_STATUS = 400
"""Status of invalid input on the v2 routes, as the protocol prescribes."""

HEADER_LENGTH = "inference-header-content-length"

#: v2 datatype -> little-endian numpy dtype (BYTES is handled apart)
DATATYPES: dict[str, str] = {
    "BOOL": "|b1",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}

BASE_OUTPUTS = ("expected_watch_time_s", "point_s", "std_s", "quick_skip_prob")


def bad(message: str) -> ApiError:
    return ApiError(V2_STATUS, message)


# --------------------------------------------------------------------------- decoding


def loads(header: bytes) -> Any:
    """The JSON header; orjson first, the stdlib parser for the NaN tokens Triton writes."""
    try:
        return orjson.loads(header)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(header)
    except (ValueError, RecursionError) as exc:
        raise bad(f"malformed JSON: {exc}") from None


def _shape(name: str, tensor: Mapping[str, Any]) -> tuple[list[int], int]:
    shape = tensor.get("shape")
    if isinstance(shape, list) and len(shape) > 2:  # before any per-dimension work
        raise bad(f"input {name!r}: shape must be [n] or [n, 1], got {len(shape)} dimensions")
    ok = isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**63 for d in shape
    )
    if not ok or not shape:
        raise bad(f"input {name!r}: shape must be a non-empty list of non-negative integers")
    return shape, math.prod(shape)


_U32 = struct.Struct("<I")


def _bytes_elements(name: str, buf: memoryview, count: int) -> np.ndarray:
    """BYTES tensor from its binary form (length-prefixed elements, decoded as UTF-8).

    Each element's offset depends on the previous one's length, so the offsets take one
    tight walk over the elements; the text is then decoded and checked in C-level passes
    (one UTF-8 decode of all elements joined by NUL, split again). Anything unusual (an
    element holding NUL, bad UTF-8, a length out of bounds) goes to :func:`_bytes_checked`,
    which finds and names the element at fault.
    """
    raw = bytes(buf)
    unpack = _U32.unpack_from
    pieces: list[bytes] = [b""] * count
    pos = 0
    try:
        for i in range(count):
            start = pos + 4
            pos = start + unpack(raw, pos)[0]
            pieces[i] = raw[start:pos]
    except struct.error:
        return _bytes_checked(name, raw, count)
    if pos != len(raw) or (count and max(map(len, pieces)) > 4 * MAX_STRING_CHARS):
        return _bytes_checked(name, raw, count)
    try:
        texts = b"\0".join(pieces).decode("utf-8").split("\0") if count else []
    except UnicodeDecodeError:
        return _bytes_checked(name, raw, count)
    if len(texts) != count or (count and max(map(len, texts)) > MAX_STRING_CHARS):
        return _bytes_checked(name, raw, count)
    out = np.empty(count, dtype=object)
    out[:] = texts
    return out


def _bytes_checked(name: str, raw: bytes, count: int) -> np.ndarray:
    """The element-by-element decoder: slower, and names the element at fault."""
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise bad(f"input {name!r}: BYTES data ends inside element {i}")
        (size,) = _U32.unpack_from(raw, pos)
        pos += 4
        if size > 4 * MAX_STRING_CHARS:  # UTF-8 takes at most 4 bytes a character
            raise bad(f"input {name!r}: element {i} has {size} bytes, over the text limit")
        if pos + size > len(raw):
            raise bad(f"input {name!r}: BYTES element {i} runs past the data")
        try:
            out[i] = text = raw[pos : pos + size].decode("utf-8")
        except UnicodeDecodeError:
            raise bad(f"input {name!r}: element {i} is not UTF-8 text") from None
        if len(text) > MAX_STRING_CHARS:
            raise bad(
                f"input {name!r}: element {i} has {len(text)} characters, over the limit of "
                f"{MAX_STRING_CHARS}"
            )
        pos += size
    if pos != len(raw):
        raise bad(f"input {name!r}: {len(raw) - pos} bytes left after {count} elements")
    return out


def _from_binary(name: str, datatype: str, buf: memoryview, count: int) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(name, buf, count)
    dtype = np.dtype(DATATYPES[datatype])
    if len(buf) != count * dtype.itemsize:
        raise bad(
            f"input {name!r}: {len(buf)} bytes of binary data for {count} {datatype} elements"
        )
    return np.frombuffer(buf, dtype=dtype, count=count)


def _from_json(name: str, datatype: str, data: Any, count: int) -> np.ndarray:
    """A tensor's JSON ``data``; built as references first, so text is never widened."""
    if not isinstance(data, list):
        raise bad(f"input {name!r}: data must be a list")
    try:
        arr = np.array(data, dtype=object)
    except (ValueError, TypeError, OverflowError):
        raise bad(f"input {name!r}: data is not a regular array of scalars") from None
    arr = arr.reshape(-1)
    if arr.size != count:
        raise bad(f"input {name!r}: {arr.size} elements, the shape says {count}")
    if count == 0:
        return np.empty(0, dtype=np.float64 if datatype.startswith("FP") else np.int64)
    values = arr.tolist()
    types = set(map(type, values))
    if datatype == "BYTES":
        if types != {str}:
            i = next(i for i, v in enumerate(values) if not isinstance(v, str))
            raise bad(f"input {name!r}: element {i} is not a string")
        longest = max(map(len, values))
        if longest > MAX_STRING_CHARS:
            i = next(i for i, v in enumerate(values) if len(v) > MAX_STRING_CHARS)
            raise bad(
                f"input {name!r}: element {i} has {longest} characters, over the limit of "
                f"{MAX_STRING_CHARS}"
            )
        return arr
    if datatype.startswith("FP"):
        if not types <= {int, float, type(None)}:
            raise bad(f"input {name!r}: {datatype} data must be numbers")
        try:
            return np.array(values, dtype=np.float64)  # null -> NaN
        except OverflowError:
            raise bad(f"input {name!r}: number out of range") from None
    if datatype == "BOOL":
        if types != {bool}:
            raise bad(f"input {name!r}: BOOL data must be true/false")
        return np.array(values, dtype=bool)
    if not types <= {int}:
        raise bad(f"input {name!r}: {datatype} data must be integers")
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        raise bad(f"input {name!r}: integer out of range") from None


@dataclass(frozen=True)
class OutputRequest:
    name: str
    binary: bool


@dataclass(frozen=True)
class V2Request:
    columns: dict[str, np.ndarray]
    n: int
    options: PredictOptions
    outputs: list[OutputRequest]
    request_id: str | None
    timeout_s: float | None = None


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _param_list(name: str, value: Any) -> Any:
    """A list parameter, given as a JSON list or (the spec's scalar form) a JSON/CSV string."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return json.loads(text if text.startswith("[") else f"[{text}]")
        except ValueError:
            raise bad(f"parameter {name!r}: cannot read {value!r} as a list") from None
    return value


def _options(parameters: Mapping[str, Any]) -> PredictOptions:
    quantiles = parameters.get("quantiles")
    if quantiles is not None:
        quantiles = _param_list("quantiles", quantiles)
        if not isinstance(quantiles, list) or not all(_is_number(q) for q in quantiles):
            raise bad("parameter 'quantiles': expected a list of levels in (0, 1)")
    intervals = parameters.get("intervals")
    if intervals is not None:
        intervals = _param_list("intervals", intervals)
        pairs_ok = isinstance(intervals, list) and all(
            isinstance(p, list)
            and len(p) == 2
            and all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in p
            )
            for p in intervals
        )
        if not pairs_ok:
            raise bad("parameter 'intervals': expected a list of [lo, hi] pairs, hi may be null")
    threshold = parameters.get("quick_skip_threshold_s")
    if threshold is not None:
        if isinstance(threshold, str):
            try:
                threshold = float(threshold)
            except ValueError:
                raise bad(f"parameter 'quick_skip_threshold_s': {threshold!r}") from None
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
            raise bad("parameter 'quick_skip_threshold_s': expected a number")
    return_params = parameters.get("return_params", False)
    if not isinstance(return_params, bool):
        raise bad("parameter 'return_params': expected true or false")
    try:
        return PredictOptions.create(quantiles, intervals, threshold, return_params)
    except InvalidInput as exc:
        raise bad(f"parameter {exc}") from None


def decode(
    model: LoadedModel,
    body: bytes,
    header_length: str | None,
    max_rows: int,
    admit: Callable[[int], None] | None = None,
) -> V2Request:
    """Columns, options and requested outputs of a v2 infer request, or a 4xx ApiError.

    ``admit`` is called with the row count the first input's shape states, before any
    tensor is converted, so that a request the queue cannot take costs only its header.
    """
    if header_length is not None:
        digits = header_length.strip()
        if not (digits.isascii() and digits.isdigit()) or int(digits) > len(body):
            raise bad(f"Inference-Header-Content-Length {header_length!r} does not fit the body")
        split = int(digits)
        header, binary = body[:split], memoryview(body)[split:]
    else:
        header, binary = body, memoryview(b"")
    doc = loads(header)
    if not isinstance(doc, dict):
        raise bad("the inference request must be a JSON object")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise bad("parameters must be an object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad("inputs must be a non-empty list of tensors")
    tensors: dict[str, np.ndarray] = {}
    lengths: dict[str, int] = {}
    offset = 0
    if admit is not None:
        first_shape = inputs[0].get("shape") if isinstance(inputs[0], dict) else None
        if isinstance(first_shape, list) and first_shape and isinstance(first_shape[0], int):
            admit(max(0, min(first_shape[0], max_rows)))
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise bad(f"inputs[{i}]: a tensor needs a name")
        name = tensor["name"]
        if name in tensors:
            raise bad(f"input {name!r} appears twice")
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in DATATYPES):
            raise bad(f"input {name!r}: unsupported datatype {datatype!r}")
        shape, count = _shape(name, tensor)
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise bad(f"input {name!r}: shape must be [n] or [n, 1], got {shape}")
        if shape[0] > max_rows:
            raise ApiError(
                413, f"input {name!r}: {shape[0]} rows exceed the limit of {max_rows} per request"
            )
        tparams = tensor.get("parameters") or {}
        size = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
        if size is not None:
            valid = isinstance(size, int) and not isinstance(size, bool) and size >= 0
            if not valid or offset + size > len(binary):
                raise bad(f"input {name!r}: binary_data_size {size!r} does not fit the body")
            arr = _from_binary(name, datatype, binary[offset : offset + size], count)
            offset += size
        elif "data" in tensor:
            arr = _from_json(name, datatype, tensor["data"], count)
        else:
            raise bad(f"input {name!r}: neither data nor binary_data_size")
        kind = model.source_kinds.get(name)
        if kind == "number" and datatype == "BYTES":
            raise bad(f"input {name!r}: the model reads numbers here, not BYTES")
        tensors[name] = arr
        lengths[name] = shape[0]
    if offset != len(binary):
        raise bad(f"{len(binary) - offset} bytes of binary data belong to no input")
    for source in model.sources:
        if source not in tensors:
            raise bad(f"input {source!r} is missing (the model reads it)")
    first = model.sources[0]
    n = lengths[first]
    for source in model.sources:
        if lengths[source] != n:
            raise bad(f"input {source!r} has {lengths[source]} rows but {first!r} has {n}")
    options = _options(parameters)
    outputs = _requested_outputs(model, doc.get("outputs"), parameters, options)
    request_id = doc.get("id")
    if isinstance(request_id, str) and not request_id.isascii():
        try:  # a lone surrogate (JSON "\ud800") cannot be encoded back
            request_id.encode("utf-8")
        except UnicodeEncodeError:
            raise bad("id must be valid Unicode text") from None
    return V2Request(
        columns={s: tensors[s] for s in model.sources},
        n=n,
        options=options,
        outputs=outputs,
        request_id=request_id if isinstance(request_id, str) else None,
        timeout_s=timeout_parameter_s(parameters),
    )


def available_outputs(model: LoadedModel, options: PredictOptions | None) -> list[str]:
    """Output names a request can get (all of them when ``options`` is None)."""
    names = list(BASE_OUTPUTS)
    if options is None or options.quantiles is not None:
        names.append("quantiles")
    if options is None or options.intervals is not None:
        names.append("interval_mass")
    if options is None or options.return_params:
        names += [f"params.{p}" for p in model.manifest.outputs]
    return names


def _requested_outputs(
    model: LoadedModel, outputs: Any, parameters: Mapping[str, Any], options: PredictOptions
) -> list[OutputRequest]:
    default_binary = parameters.get("binary_data_output") is True
    available = available_outputs(model, options)
    if outputs is None:
        return [OutputRequest(name, default_binary) for name in available]
    if not isinstance(outputs, list):
        raise bad("outputs must be a list")
    every = set(available_outputs(model, None))
    chosen: list[OutputRequest] = []
    for i, out in enumerate(outputs):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise bad(f"outputs[{i}]: a requested output needs a name")
        name = out["name"]
        if name not in every:
            raise bad(f"unknown output {name!r}; outputs are {sorted(every)}")
        if name not in available:
            need = {"quantiles": "quantiles", "interval_mass": "intervals"}.get(
                name, "return_params"
            )
            raise bad(f"output {name!r} needs the request parameter {need!r}")
        oparams = out.get("parameters") or {}
        binary = oparams.get("binary_data", default_binary) if isinstance(oparams, dict) else False
        chosen.append(OutputRequest(name, binary is True))
    return chosen


# --------------------------------------------------------------------------- encoding


def _output_arrays(result: Prediction) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "expected_watch_time_s": result.mean,
        "point_s": result.point,
        "std_s": result.std,
        "quick_skip_prob": result.quick_skip_prob,
    }
    if result.quantiles is not None:
        arrays["quantiles"] = result.quantiles
    if result.interval_mass is not None:
        arrays["interval_mass"] = result.interval_mass
    for name, value in (result.params or {}).items():
        arrays[f"params.{name}"] = value
    return arrays


def encode(model: LoadedModel, request: V2Request, result: Prediction) -> tuple[bytes, int | None]:
    """Response body and, when some output is binary, the JSON header's length."""
    arrays = _output_arrays(result)
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out in request.outputs:
        arr = np.ascontiguousarray(arrays[out.name], dtype="<f8")
        entry: dict[str, Any] = {"name": out.name, "datatype": "FP64", "shape": list(arr.shape)}
        if out.binary:
            blob = arr.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.reshape(-1)
        outputs.append(entry)
    parameters: dict[str, Any] = {"quick_skip_threshold_s": result.quick_skip_threshold_s}
    if request.options.quantiles is not None:
        parameters["quantiles"] = request.options.quantiles
    header: dict[str, Any] = {
        "model_name": model.name,
        "model_version": model.version,
        "parameters": parameters,
        "outputs": outputs,
    }
    if request.request_id is not None:
        header["id"] = request.request_id
    text = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return text, None
    return b"".join([text, *blobs]), len(text)


def timeout_parameter_s(parameters: Mapping[str, Any]) -> float | None:
    """The request parameter ``timeout`` in seconds: microseconds, as Triton's clients send it.

    0 or absent: no deadline from the request.
    """
    value = parameters.get("timeout")
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise bad(f"parameter 'timeout': expected microseconds >= 0, got {value!r}")
    return value / 1e6 if value > 0 else None


# --------------------------------------------------------------------------- routes

router = APIRouter(prefix="/v2", tags=["v2"])


@router.get("")
async def server_metadata() -> Response:
    """Server name, version and the protocol extensions it implements."""
    return json_response(
        {"name": "watchtime", "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]}
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


def _metadata(model: LoadedModel, request: Request) -> Response:
    repository = serving_repository(request)
    kinds = model.source_kinds
    inputs = []
    for source in model.sources:
        kind = model.source_kinds[source]
        numeric = any(f.source == source and f.kind == "numeric" for f in model.manifest.features)
        datatype = "BYTES" if kind == "string" else ("FP64" if numeric else "INT64")
        inputs.append({"name": source, "datatype": datatype, "shape": [-1]})
    outputs = [
        {"name": name, "datatype": "FP64", "shape": [-1] if name in BASE_OUTPUTS else [-1, -1]}
        for name in available_outputs(model, None)
    ]
    return json_response(
        {
            "name": model.name,
            "versions": repository.versions(model.name),
            "platform": "onnxruntime_onnx",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {
                "family": model.manifest.family,
                "quick_skip_threshold_s": model.manifest.quick_skip_threshold_s,
                # inputs where NaN marks a missing value (INT64 ones sent as FP64 or FP32);
                # one comma-separated string, as v2 parameters are scalars
                "nullable_inputs": ",".join(s for s in model.sources if kinds[s] == "number"),
            },
        }
    )


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
            header_timeout = timeout_header_s(request.headers, V2_STATUS)
            body = await request.body(plane.settings.max_body_bytes, V2_STATUS)
            decoded = await plane.decode(
                decode,
                model,
                body,
                request.headers.get(HEADER_LENGTH),
                plane.settings.max_request_rows,
                plane.admission(model),
            )
            deadline = plane.deadline(arrival, header_timeout, decoded.timeout_s)
            result = await plane.infer(
                model, decoded.columns, decoded.n, decoded.options, deadline, request.disconnected()
            )
            out, json_length = encode(model, decoded, result)
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
            reply = Reply.error(from_exception(exc, V2_STATUS, "inputs"), v2=True)
        record.status = reply.status
    return reply


async def _documented_infer(request: Request, name: str, version: str | None) -> Response:
    """The FastAPI route's body: the same handler (hosts that bypass the fast path)."""
    return await documented_route(serve_infer, request, name, version)


V2_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": 'invalid input (v2 body: {"error": ...})'},
    404: {"model": ErrorBody, "description": "unknown model"},
    413: {"model": ErrorBody, "description": "body or row count over the limit"},
    429: {"model": ErrorBody, "description": "queue full: retry after Retry-After seconds"},
    503: {"model": ErrorBody, "description": "models not loaded yet"},
    504: {"model": ErrorBody, "description": "deadline (timeout parameter) passed in queue"},
}

INFER_DOC: dict[str, Any] = {"openapi_extra": v2_request_body(), "responses": V2_ERRORS}


@router.post("/models/{name}/infer", **INFER_DOC)
async def infer(request: Request, name: str) -> Response:
    """Inference on the model's highest version (JSON or binary tensors)."""
    return await _documented_infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", **INFER_DOC)
async def infer_version(request: Request, name: str, version: Version) -> Response:
    """Inference on one model version."""
    return await _documented_infer(request, name, version)
