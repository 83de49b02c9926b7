"""The Open Inference Protocol's gRPC messages <-> the v2 codec's request and answer.

A ``ModelInferRequest`` becomes the same :class:`~service.protocol.v2.codec.V2Request` as an
HTTP infer body, through the same rules (:mod:`service.protocol.v2.codec` and
:mod:`.tensors`): the datatypes, shapes ``[n]`` or ``[n, 1]``, the row limit, the BYTES
framing of raw contents, the parameters ``quantiles``, ``intervals``,
``quick_skip_threshold_s``, ``return_params`` and ``timeout``, and the outputs one may ask
for. Only the carriage differs:

- ``raw_input_contents`` (the fast path): one entry per input, in input order, each the
  binary tensor extension's form (little-endian elements; BYTES elements each a 4-byte
  little-endian length and the bytes). No input may then carry ``contents``.
- ``contents``: the repeated field of the input's datatype (``fp64_contents`` for FP64,
  ``int64_contents`` for INT64, ``bytes_contents`` for BYTES, ...); FP16 has none and
  travels raw only.
- a parameter is a ``bool_param``, an ``int64_param`` or a ``string_param`` (lists as text:
  ``"0.1,0.5,0.9"``, ``"[[0,3],[3,null]]"``); the answer's ``quick_skip_threshold_s`` and
  ``quantiles`` parameters are text too.

The answer carries every output as FP64: in ``raw_output_contents`` when the request sent
raw inputs or the parameter ``binary_data_output`` (or an output's ``binary_data``) asks so,
else in each output's ``fp64_contents``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput
from service.protocol.grpc import grpc_predict_v2_pb2 as pb
from service.protocol.v2.codec import (
    V2Request,
    assemble,
    check_datatype,
    check_shape,
    output_arrays,
    response_parameters,
)
from service.protocol.v2.tensors import DATATYPES, checked_shape, from_binary, from_texts
from service.runtime.model import ModelRuntime
from service.runtime.prediction import Prediction

#: datatype -> the field of InferTensorContents that carries it
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(name: str, param: pb.InferParameter) -> bool | int | str:
    """The value of one InferParameter; InvalidInput when it holds none."""
    choice = param.WhichOneof("parameter_choice")
    if choice is None:
        raise InvalidInput(
            f"parameter {name!r}: no value (bool_param, int64_param or string_param)"
        )
    value: bool | int | str = getattr(param, choice)
    return value


def parameters_of(params: Any) -> dict[str, Any]:
    """A parameters map (request, tensor or output) as the JSON form's plain dict."""
    return {name: parameter_value(name, param) for name, param in params.items()}


def _from_contents(
    name: str, datatype: str, contents: pb.InferTensorContents, count: int
) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} travels in raw_input_contents only")
    values = getattr(contents, field)
    if len(values) != count:
        others = [f.name for f, _ in contents.ListFields() if f.name != field]
        hint = f" ({datatype} travels in {field}, not {', '.join(others)})" if others else ""
        raise InvalidInput(f"input {name!r}: {len(values)} elements, the shape says {count}{hint}")
    if datatype == "BYTES":
        return from_texts(name, values)
    try:
        return np.array(values, dtype=DATATYPES[datatype])
    except OverflowError:
        raise InvalidInput(f"input {name!r}: a value out of range for {datatype}") from None


def decode_infer(
    model: ModelRuntime,
    request: pb.ModelInferRequest,
    max_rows: int,
    admit: Callable[[int], None] | None = None,
    optional: frozenset[str] = frozenset(),
) -> V2Request:
    """The v2 request of a ModelInferRequest, or an InvalidInput or TooLarge.

    Inputs of ``optional`` may be left out: the data plane looks them up by id.

    ``admit`` is called with the first input's row count before any tensor is converted.
    """
    inputs = request.inputs
    if not inputs:
        raise InvalidInput("inputs must be a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidInput(
            f"raw_input_contents holds {len(raw)} entries for {len(inputs)} inputs "
            "(one per input, in input order)"
        )
    if admit is not None:
        first = inputs[0].shape
        if 0 < len(first) <= 2:
            admit(max(0, min(first[0], max_rows)))
    tensors: dict[str, np.ndarray] = {}
    lengths: dict[str, int] = {}
    for i, tensor in enumerate(inputs):
        name = tensor.name
        if not name:
            raise InvalidInput(f"inputs[{i}]: a tensor needs a name")
        if name in tensors:
            raise InvalidInput(f"input {name!r} appears twice")
        datatype = check_datatype(name, tensor.datatype)
        if len(tensor.shape) > 2:  # before the dimensions are copied out of the message
            raise InvalidInput(
                f"input {name!r}: shape must be [n] or [n, 1], got {len(tensor.shape)} dimensions"
            )
        shape, count = checked_shape(name, list(tensor.shape))
        check_shape(name, shape, max_rows)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"input {name!r}: contents and raw_input_contents together (send one)"
                )
            arr = from_binary(name, datatype, memoryview(raw[i]), count)
        else:
            arr = _from_contents(name, datatype, tensor.contents, count)
        tensors[name] = arr
        lengths[name] = shape[0]
    outputs = [
        {"name": out.name, "parameters": parameters_of(out.parameters)} for out in request.outputs
    ]
    return assemble(
        model,
        tensors,
        lengths,
        parameters_of(request.parameters),
        outputs or None,
        request.id or None,
        optional,
    )


def wants_raw(request: pb.ModelInferRequest, decoded: V2Request) -> bool:
    """Whether the answer goes in ``raw_output_contents``."""
    return bool(request.raw_input_contents) or any(out.binary for out in decoded.outputs)


def _text(value: Any) -> str:
    """A response parameter as text: JSON for numbers and lists of levels."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def encode_infer(
    model: ModelRuntime, request: V2Request, result: Prediction, raw: bool
) -> pb.ModelInferResponse:
    """The ModelInferResponse of a prediction: the outputs asked for, FP64, in request order."""
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request.request_id or ""
    )
    for name, value in response_parameters(request, result).items():
        response.parameters[name].string_param = _text(value)
    arrays = output_arrays(result)
    for out in request.outputs:
        arr = np.ascontiguousarray(arrays[out.name], dtype="<f8")
        tensor = response.outputs.add(name=out.name, datatype="FP64", shape=arr.shape)
        if raw:
            response.raw_output_contents.append(arr.tobytes())
        else:
            tensor.contents.fp64_contents.extend(arr.reshape(-1).tolist())
    return response
