"""The Open Inference Protocol (KServe v2) codec: infer request bytes -> raw columns,
options and requested outputs; Prediction -> response bytes, JSON or binary tensors.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput, TooLarge
from service.protocol.v2.tensors import (
    DATATYPES,
    from_binary,
    from_json,
    load_header,
    tensor_shape,
)
from service.runtime.model import ModelRuntime
from service.runtime.prediction import Prediction, PredictOptions

HEADER_LENGTH = "inference-header-content-length"

BASE_OUTPUTS = ("expected_watch_time_s", "point_s", "std_s", "quick_skip_prob")


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
            raise InvalidInput(f"parameter {name!r}: cannot read {value!r} as a list") from None
    return value


def _options(parameters: Mapping[str, Any]) -> PredictOptions:
    quantiles = parameters.get("quantiles")
    if quantiles is not None:
        quantiles = _param_list("quantiles", quantiles)
        if not isinstance(quantiles, list) or not all(_is_number(q) for q in quantiles):
            raise InvalidInput("parameter 'quantiles': expected a list of levels in (0, 1)")
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
            raise InvalidInput(
                "parameter 'intervals': expected a list of [lo, hi] pairs, hi may be null"
            )
    threshold = parameters.get("quick_skip_threshold_s")
    if threshold is not None:
        if isinstance(threshold, str):
            try:
                threshold = float(threshold)
            except ValueError:
                raise InvalidInput(f"parameter 'quick_skip_threshold_s': {threshold!r}") from None
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
            raise InvalidInput("parameter 'quick_skip_threshold_s': expected a number")
    return_params = parameters.get("return_params", False)
    if not isinstance(return_params, bool):
        raise InvalidInput("parameter 'return_params': expected true or false")
    try:
        return PredictOptions.create(quantiles, intervals, threshold, return_params)
    except InvalidInput as exc:
        raise InvalidInput(f"parameter {exc}") from None


def decode_request(
    model: ModelRuntime,
    body: bytes,
    header_length: str | None,
    max_rows: int,
    admit: Callable[[int], None] | None = None,
    optional: frozenset[str] = frozenset(),
) -> V2Request:
    """Columns, options and requested outputs of a v2 infer request, or an InvalidInput or TooLarge.

    Inputs of ``optional`` may be left out: the data plane looks them up by id.

    ``admit`` is called with the row count the first input's shape states, before any
    tensor is converted, so that a request the queue cannot take costs only its header.
    """
    if header_length is not None:
        digits = header_length.strip()
        if not (digits.isascii() and digits.isdigit()) or int(digits) > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length!r} does not fit the body"
            )
        split = int(digits)
        header, binary = body[:split], memoryview(body)[split:]
    else:
        header, binary = body, memoryview(b"")
    doc = load_header(header)
    if not isinstance(doc, dict):
        raise InvalidInput("the inference request must be a JSON object")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters must be an object")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list of tensors")
    tensors: dict[str, np.ndarray] = {}
    lengths: dict[str, int] = {}
    offset = 0
    if admit is not None:
        first_shape = inputs[0].get("shape") if isinstance(inputs[0], dict) else None
        if isinstance(first_shape, list) and first_shape and isinstance(first_shape[0], int):
            admit(max(0, min(first_shape[0], max_rows)))
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidInput(f"inputs[{i}]: a tensor needs a name")
        name = tensor["name"]
        if name in tensors:
            raise InvalidInput(f"input {name!r} appears twice")
        datatype = check_datatype(name, tensor.get("datatype"))
        shape, count = tensor_shape(name, tensor)
        check_shape(name, shape, max_rows)
        tparams = tensor.get("parameters") or {}
        size = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
        if size is not None:
            valid = isinstance(size, int) and not isinstance(size, bool) and size >= 0
            if not valid or offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size!r} does not fit the body"
                )
            arr = from_binary(name, datatype, binary[offset : offset + size], count)
            offset += size
        elif "data" in tensor:
            arr = from_json(name, datatype, tensor["data"], count)
        else:
            raise InvalidInput(f"input {name!r}: neither data nor binary_data_size")
        tensors[name] = arr
        lengths[name] = shape[0]
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data belong to no input")
    return assemble(
        model, tensors, lengths, parameters, doc.get("outputs"), doc.get("id"), optional
    )


def check_datatype(name: str, datatype: object) -> str:
    """An input's datatype, one of the protocol's (InvalidInput else), whatever the wire."""
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in DATATYPES):
        raise InvalidInput(f"input {name!r}: unsupported datatype {datatype!r}")
    return datatype


def check_shape(name: str, shape: list[int], max_rows: int) -> None:
    """An input's shape, whatever the wire: ``[n]`` or ``[n, 1]``, and ``n`` within the row
    limit (TooLarge)."""
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInput(f"input {name!r}: shape must be [n] or [n, 1], got {shape}")
    if shape[0] > max_rows:
        raise TooLarge(
            f"input {name!r}: {shape[0]} rows exceed the limit of {max_rows} per request"
        )


def assemble(
    model: ModelRuntime,
    tensors: dict[str, np.ndarray],
    lengths: Mapping[str, int],
    parameters: Mapping[str, Any],
    outputs: Any,
    request_id: Any,
    optional: frozenset[str] = frozenset(),
) -> V2Request:
    """The request from its decoded input tensors (name -> values, name -> rows), its
    ``parameters``, the ``outputs`` it asks for (a list of ``{"name", "parameters"}``, or
    None for all) and its id: the checks every wire form of the protocol shares. Inputs of
    ``optional`` (the feature store fills them by id) may be left out."""
    for name, arr in tensors.items():
        if model.source_kinds.get(name) == "number" and arr.dtype.kind == "O":
            raise InvalidInput(f"input {name!r}: the model reads numbers here, not BYTES")
    sent = [source for source in model.sources if source in tensors]
    for source in model.sources:
        if source not in tensors and (source not in optional or not sent):
            raise InvalidInput(f"input {source!r} is missing (the model reads it)")
    first = sent[0]
    n = lengths[first]
    for source in sent:
        if lengths[source] != n:
            raise InvalidInput(f"input {source!r} has {lengths[source]} rows but {first!r} has {n}")
    options = _options(parameters)
    chosen = _requested_outputs(model, outputs, parameters, options)
    if isinstance(request_id, str) and not request_id.isascii():
        try:  # a lone surrogate (JSON "\ud800") cannot be encoded back
            request_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("id must be valid Unicode text") from None
    return V2Request(
        columns={s: tensors[s] for s in sent},
        n=n,
        options=options,
        outputs=chosen,
        request_id=request_id if isinstance(request_id, str) else None,
        timeout_s=timeout_parameter_s(parameters),
    )


def available_outputs(model: ModelRuntime, options: PredictOptions | None) -> list[str]:
    """Output names a request can get (all of them when ``options`` is None)."""
    names = list(BASE_OUTPUTS)
    if options is None or options.quantiles is not None:
        names.append("quantiles")
    if options is None or options.intervals is not None:
        names.append("interval_mass")
    if options is None or options.return_params:
        names += [f"params.{p}" for p in model.manifest.outputs]
    return names


INPUT_DATATYPES = {"string": "BYTES", "number": "FP64", "integer": "INT64"}
"""The datatype the model metadata declares for an input, by the kind of its column."""


def metadata_document(model: ModelRuntime, versions: list[str]) -> dict[str, Any]:
    """The model metadata: one input per raw column, every output, the served ``versions``."""
    meta = model.metadata()
    inputs = [
        {"name": column["name"], "datatype": INPUT_DATATYPES[column["kind"]], "shape": [-1]}
        for column in meta["inputs"]
    ]
    outputs = [
        {"name": name, "datatype": "FP64", "shape": [-1] if name in BASE_OUTPUTS else [-1, -1]}
        for name in available_outputs(model, None)
    ]
    # inputs where NaN marks a missing value (INT64 ones sent as FP64 or FP32); one
    # comma-separated string, as v2 parameters are scalars
    nullable = [column["name"] for column in meta["inputs"] if column["kind"] != "string"]
    return {
        "name": meta["name"],
        "versions": versions,
        "platform": meta["platform"],
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "family": meta["family"],
            "quick_skip_threshold_s": meta["quick_skip_threshold_s"],
            "nullable_inputs": ",".join(nullable),
        },
    }


def _requested_outputs(
    model: ModelRuntime, outputs: Any, parameters: Mapping[str, Any], options: PredictOptions
) -> list[OutputRequest]:
    default_binary = parameters.get("binary_data_output") is True
    available = available_outputs(model, options)
    if outputs is None:
        return [OutputRequest(name, default_binary) for name in available]
    if not isinstance(outputs, list):
        raise InvalidInput("outputs must be a list")
    every = set(available_outputs(model, None))
    chosen: list[OutputRequest] = []
    for i, out in enumerate(outputs):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise InvalidInput(f"outputs[{i}]: a requested output needs a name")
        name = out["name"]
        if name not in every:
            raise InvalidInput(f"unknown output {name!r}; outputs are {sorted(every)}")
        if name not in available:
            need = {"quantiles": "quantiles", "interval_mass": "intervals"}.get(
                name, "return_params"
            )
            raise InvalidInput(f"output {name!r} needs the request parameter {need!r}")
        oparams = out.get("parameters") or {}
        binary = oparams.get("binary_data", default_binary) if isinstance(oparams, dict) else False
        chosen.append(OutputRequest(name, binary is True))
    return chosen


# --------------------------------------------------------------------------- the answer


def output_arrays(result: Prediction) -> dict[str, np.ndarray]:
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


def encode_response(
    model: ModelRuntime, request: V2Request, result: Prediction
) -> tuple[bytes, int | None]:
    """Response body and, when some output is binary, the JSON header's length."""
    arrays = output_arrays(result)
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
    parameters = response_parameters(request, result)
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


def response_parameters(request: V2Request, result: Prediction) -> dict[str, Any]:
    """The answer's ``parameters``: the threshold applied and the quantile levels asked."""
    parameters: dict[str, Any] = {"quick_skip_threshold_s": result.quick_skip_threshold_s}
    if request.options.quantiles is not None:
        parameters["quantiles"] = request.options.quantiles
    return parameters


def timeout_parameter_s(parameters: Mapping[str, Any]) -> float | None:
    """The request parameter ``timeout`` in seconds: microseconds, as Triton's clients send it.

    0 or absent: no deadline from the request.
    """
    value = parameters.get("timeout")
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise InvalidInput(f"parameter 'timeout': expected microseconds >= 0, got {value!r}")
    return value / 1e6 if value > 0 else None
