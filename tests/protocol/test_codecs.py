"""The native and v2 codecs on their own: bytes in, columns and options out, and back.

No HTTP here: each codec is driven with bodies built by hand from the shipped model's own
columns, and its answers are read back with a plain JSON parser and numpy.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from service.errors import InvalidInput, MalformedBody, ServiceError, TextTooLong, TooLarge
from service.protocol.native import codec as native
from service.protocol.v2 import codec as v2
from service.runtime.model import ModelRuntime, SessionConfig
from service.runtime.prediction import PredictOptions
from service.versions import highest_version_dir
from tests.support import MODELS

ROWS = 9


@pytest.fixture(scope="module")
def model() -> ModelRuntime:
    found = highest_version_dir(MODELS / "egmn")
    assert found is not None
    return ModelRuntime.load(found, SessionConfig(1, 1))


def _plain(model: ModelRuntime, n: int) -> dict[str, list[Any]]:
    """The model's example columns as JSON carries them, with one missing number."""
    columns = {k: v.tolist() for k, v in model.example_columns(n).items()}
    number = next(s for s in model.sources if model.source_kinds[s] == "number")
    columns[number][1] = None
    return columns


def _same_column(got: np.ndarray, sent: list[Any]) -> None:
    if got.dtype == object:
        assert got.tolist() == sent
        return
    want = np.array([np.nan if v is None else v for v in sent], dtype=np.float64)
    np.testing.assert_array_equal(got.astype(np.float64), want)


def test_native_columnar_and_row_forms_decode_to_the_columns_sent(model: ModelRuntime) -> None:
    columns = _plain(model, ROWS)
    options = {"quantiles": [0.25, 0.75], "intervals": [[0, 3], [3, None]]}
    body = orjson.dumps({"features": columns, **options})
    decoded = native.decode_request(model, body, max_rows=100)
    assert (decoded.n, decoded.form) == (ROWS, "features")
    assert set(decoded.columns) == set(model.sources)
    for name, sent in columns.items():
        _same_column(decoded.columns[name], sent)
    np.testing.assert_array_equal(decoded.options.quantiles, [0.25, 0.75])
    np.testing.assert_array_equal(decoded.options.intervals, [[0, 3], [3, np.inf]])

    rows = [{k: v[i] for k, v in columns.items()} for i in range(ROWS)]
    as_rows = native.decode_request(model, orjson.dumps({"instances": rows}), max_rows=100)
    assert as_rows.form == "instances"
    for name, sent in columns.items():
        _same_column(as_rows.columns[name], sent)


def test_native_answer_reads_back_as_the_prediction(model: ModelRuntime) -> None:
    options = PredictOptions.create([0.1, 0.9], [(0.0, 5.0), (5.0, None)], None, True)
    result = model.predict(model.example_columns(ROWS), options)
    doc = orjson.loads(native.encode_response(model, result, options))
    assert (doc["model"], doc["version"], doc["n"]) == (model.name, model.version, ROWS)
    np.testing.assert_array_equal(doc["expected_watch_time_s"], result.mean)
    np.testing.assert_array_equal(doc["quick_skip_prob"], result.quick_skip_prob)
    np.testing.assert_array_equal(doc["quantiles"]["values_s"], result.quantiles)
    assert doc["intervals"]["edges_s"] == [[0.0, 5.0], [5.0, None]]
    assert set(doc["params"]) == set(model.manifest.outputs)


@pytest.mark.parametrize(
    ("mutate", "kind", "field", "row"),
    [
        (lambda body, cols: b"{" + body, MalformedBody, "body", None),
        (
            lambda body, cols: orjson.dumps({"features": cols, "extra": 1}),
            InvalidInput,
            "extra",
            None,
        ),
        (
            lambda body, cols: orjson.dumps({"features": {**cols, "user_id": ["x"] * ROWS}}),
            InvalidInput,
            "features.user_id",
            0,
        ),
        (
            lambda body, cols: orjson.dumps({"features": cols, "quantiles": [0.5, 1.5]}),
            InvalidInput,
            "quantiles[1]",
            None,
        ),
        (
            lambda body, cols: orjson.dumps({"features": {k: v * 20 for k, v in cols.items()}}),
            TooLarge,
            "features",
            None,
        ),
    ],
)
def test_native_faults_name_field_and_row_and_carry_no_status(
    model: ModelRuntime, mutate: Any, kind: type[ServiceError], field: str, row: int | None
) -> None:
    columns = _plain(model, ROWS)
    body = mutate(orjson.dumps({"features": columns}), columns)
    with pytest.raises(kind) as caught:
        native.decode_request(model, body, max_rows=100)
    err = caught.value
    assert (err.field, err.row) == (field, row), err.message
    assert err.message.startswith(field)
    assert not hasattr(err, "status")  # the protocol's table decides


def test_native_text_over_the_limit_is_its_own_code(model: ModelRuntime) -> None:
    columns = _plain(model, ROWS)
    text = next(s for s in model.sources if model.source_kinds[s] == "string")
    columns[text][4] = "x" * 10_000
    with pytest.raises(TextTooLong) as caught:
        native.decode_request(model, orjson.dumps({"features": columns}), max_rows=100)
    assert (caught.value.code, caught.value.row) == ("too_long", 4)


def _v2_tensor(name: str, values: list[Any], kind: str) -> tuple[dict[str, Any], bytes]:
    """A v2 input, and its binary form (BYTES: length-prefixed UTF-8; numbers: FP64)."""
    if kind == "string":
        blob = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in values)
        datatype = "BYTES"
    else:
        blob = np.array([np.nan if v is None else v for v in values], "<f8").tobytes()
        datatype = "FP64"
    return {"name": name, "datatype": datatype, "shape": [len(values)]}, blob


def test_v2_json_and_binary_bodies_decode_alike(model: ModelRuntime) -> None:
    columns = _plain(model, ROWS)
    json_inputs, binary_inputs, blobs = [], [], []
    for name, values in columns.items():
        head, blob = _v2_tensor(name, values, model.source_kinds[name])
        nan_data = [float("nan") if v is None else v for v in values]
        json_inputs.append({**head, "data": nan_data})
        binary_inputs.append({**head, "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    params = {"quantiles": [0.5], "binary_data_output": True}
    # the stdlib writes NaN as the bare token Triton's client sends (orjson writes null)
    json_body = json.dumps({"inputs": json_inputs, "parameters": params}).encode()
    as_json = v2.decode_request(model, json_body, None, 100)
    header = orjson.dumps({"inputs": binary_inputs, "parameters": params})
    as_binary = v2.decode_request(model, header + b"".join(blobs), str(len(header)), 100)
    assert as_json.n == as_binary.n == ROWS
    for name, sent in columns.items():
        _same_column(as_json.columns[name], sent)
        _same_column(as_binary.columns[name], sent)
    assert [o.binary for o in as_binary.outputs] == [True] * len(as_binary.outputs)


def test_v2_binary_answer_reads_back_as_the_prediction(model: ModelRuntime) -> None:
    columns = _plain(model, ROWS)
    inputs, blobs = [], []
    for name, values in columns.items():
        head, blob = _v2_tensor(name, values, model.source_kinds[name])
        inputs.append({**head, "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    header = orjson.dumps(
        {
            "id": "r1",
            "inputs": inputs,
            "parameters": {"quantiles": [0.2, 0.8]},
            "outputs": [
                {"name": "quantiles", "parameters": {"binary_data": True}},
                {"name": "point_s"},
            ],
        }
    )
    request = v2.decode_request(model, header + b"".join(blobs), str(len(header)), 100)
    result = model.predict(request.columns, request.options)
    body, json_length = v2.encode_response(model, request, result)
    assert json_length is not None
    doc = orjson.loads(body[:json_length])
    assert doc["id"] == "r1" and [o["name"] for o in doc["outputs"]] == ["quantiles", "point_s"]
    quantiles = np.frombuffer(body[json_length:], "<f8").reshape(ROWS, 2)
    np.testing.assert_array_equal(quantiles, result.quantiles)
    np.testing.assert_array_equal(doc["outputs"][1]["data"], result.point)


def test_v2_faults_are_plain_invalid_input_or_too_large(model: ModelRuntime) -> None:
    columns = _plain(model, ROWS)
    head, blob = _v2_tensor("user_id", columns["user_id"], "number")
    bad_size = {**head, "parameters": {"binary_data_size": len(blob) + 8}}
    header = orjson.dumps({"inputs": [bad_size]})
    with pytest.raises(InvalidInput, match="binary_data_size"):
        v2.decode_request(model, header + blob, str(len(header)), 100)
    with pytest.raises(TooLarge, match="rows exceed"):
        v2.decode_request(model, orjson.dumps({"inputs": [{**head, "data": [1] * ROWS}]}), None, 4)
    with pytest.raises(InvalidInput, match="malformed JSON"):
        v2.decode_request(model, b"{nope", None, 100)
