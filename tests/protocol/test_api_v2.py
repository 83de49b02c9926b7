"""Open Inference Protocol (KServe v2) routes: raw JSON and binary, and the Triton client."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from service.runtime.repository import ModelRepository
from tests.support.api import (
    EGMN_VERSIONS,
    SERVED_VERSION,
    AppClient,
    LiveServer,
    Reference,
    app_client,
    manifest,
)
from tests.support.v2 import (
    LEVELS,
    check_against_reference,
    datatype,
    json_inputs,
    tensor_columns,
)

INTERVALS = [[0, 3], [3, 10], [10, None]]


@pytest.fixture(scope="module")
def client(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository, max_request_rows=300)


def binary_body(
    columns: dict[str, np.ndarray], extra: dict[str, Any] | None = None
) -> tuple[bytes, int]:
    """A binary-extension request written by hand from the extension's description."""
    inputs, blobs = [], []
    for k, v in columns.items():
        if v.dtype.kind == "O":
            blob = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in v)
        else:
            blob = v.astype("<f8" if v.dtype.kind == "f" else "<i8").tobytes()
        inputs.append(
            {
                "name": k,
                "shape": [len(v)],
                "datatype": datatype(v),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = json.dumps({"inputs": inputs, **(extra or {})}).encode()
    return header + b"".join(blobs), len(header)


def outputs_of(doc: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        o["name"]: np.asarray(o["data"], dtype=np.float64).reshape(o["shape"])
        for o in doc["outputs"]
    }


# ----------------------------------------------------------------------------- raw protocol


def test_server_and_model_metadata(client: AppClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "watchtime" and "binary_tensor_data" in meta["extensions"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    model = client.get("/v2/models/egmn").json()
    assert model["name"] == "egmn" and model["versions"] == EGMN_VERSIONS
    assert [i["name"] for i in model["inputs"]] == manifest().source_columns()
    types = {i["name"]: i["datatype"] for i in model["inputs"]}
    assert (
        types["tag"] == "BYTES" and types["duration_ms"] == "FP64" and types["user_id"] == "INT64"
    )
    names = {o["name"] for o in model["outputs"]}
    assert {"expected_watch_time_s", "point_s", "std_s", "quick_skip_prob"} <= names
    assert {"quantiles", "interval_mass"} <= names
    assert client.get(f"/v2/models/egmn/versions/{SERVED_VERSION}").json() == model
    assert client.get("/v2/models/egmn/ready").json() == {"name": "egmn", "ready": True}
    for version in EGMN_VERSIONS:
        assert client.get(f"/v2/models/egmn/versions/{version}/ready").status_code == 200


def test_json_infer_equals_reference(client: AppClient, reference: Reference) -> None:
    columns = tensor_columns(64)
    body = {
        "id": "r-1",
        "inputs": json_inputs(columns),
        "parameters": {"quantiles": LEVELS, "intervals": INTERVALS, "quick_skip_threshold_s": 2.5},
    }
    r = client.post("/v2/models/egmn/infer", content=json.dumps(body))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (
        doc["model_name"] == "egmn"
        and doc["model_version"] == SERVED_VERSION
        and doc["id"] == "r-1"
    )
    assert all(o["datatype"] == "FP64" for o in doc["outputs"])
    got = outputs_of(doc)
    assert got["quantiles"].shape == (64, 3) and got["expected_watch_time_s"].shape == (64,)
    check_against_reference(got, reference, columns, 2.5)


def test_nan_tokens_mark_missing_values(client: AppClient, reference: Reference) -> None:
    columns = tensor_columns(16)
    columns["duration_ms"][::2] = np.nan
    columns["follow_user_num"][1] = np.nan
    text = json.dumps({"inputs": json_inputs(columns)})  # the stdlib writes NaN tokens
    assert "NaN" in text
    r = client.post("/v2/models/egmn/infer", content=text)
    assert r.status_code == 200, r.text
    check_against_reference(outputs_of(r.json()), reference, columns, 3.0, None, None)


def test_binary_request_and_response(client: AppClient, reference: Reference) -> None:
    columns = tensor_columns(50, start=500)
    columns["duration_ms"][3] = np.nan
    extra = {
        "parameters": {"quantiles": "0.1, 0.5, 0.9", "intervals": "[[0,3],[3,10],[10,null]]"},
        "outputs": [
            {"name": "expected_watch_time_s", "parameters": {"binary_data": True}},
            {"name": "quantiles", "parameters": {"binary_data": True}},
            {"name": "quick_skip_prob"},
        ],
    }
    body, header_length = binary_body(columns, extra)
    r = client.post(
        f"/v2/models/egmn/versions/{SERVED_VERSION}/infer",
        content=body,
        headers={
            "Inference-Header-Content-Length": str(header_length),
            "content-type": "application/octet-stream",
        },
    )
    assert r.status_code == 200, r.text
    split = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:split])
    blob = r.content[split:]
    assert [o["name"] for o in doc["outputs"]] == [
        "expected_watch_time_s",
        "quantiles",
        "quick_skip_prob",
    ]
    mean_size = doc["outputs"][0]["parameters"]["binary_data_size"]
    q_size = doc["outputs"][1]["parameters"]["binary_data_size"]
    assert (mean_size, q_size) == (50 * 8, 50 * 3 * 8) and len(blob) == mean_size + q_size
    dist = reference.distribution(columns)
    mean = np.frombuffer(blob[:mean_size], dtype="<f8")
    quant = np.frombuffer(blob[mean_size:], dtype="<f8").reshape(50, 3)
    np.testing.assert_allclose(mean, dist.mean(), rtol=1e-6)
    np.testing.assert_allclose(quant, dist.icdf(np.array(LEVELS)), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(doc["outputs"][2]["data"], dist.cdf(3.0), rtol=1e-6)


def test_params_outputs(client: AppClient, reference: Reference) -> None:
    columns = tensor_columns(5)
    body = {"inputs": json_inputs(columns), "parameters": {"return_params": True}}
    got = outputs_of(client.post("/v2/models/egmn/infer", content=json.dumps(body)).json())
    for name, value in reference.distribution(columns).params().items():
        np.testing.assert_allclose(got[f"params.{name}"], value, rtol=1e-6)


def _v2_error(r: Any, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    for word in words:
        assert word in body["error"], body


def _with(columns: dict[str, np.ndarray], **changes: Any) -> list[dict[str, Any]]:
    inputs = json_inputs(columns)
    for entry in inputs:
        entry.update(changes.get(entry["name"], {}))
    return inputs


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda c: [i for i in json_inputs(c) if i["name"] != "hourmin"], ["hourmin"]),
        (lambda c: _with(c, video_id={"shape": [3], "data": [1, 2, 3]}), ["video_id", "rows"]),
        (lambda c: _with(c, video_id={"shape": [5]}), ["video_id", "elements"]),
        (lambda c: _with(c, duration_ms={"datatype": "BYTES", "data": ["a"] * 4}), ["duration_ms"]),
        (lambda c: _with(c, duration_ms={"datatype": "FP128"}), ["duration_ms", "datatype"]),
        (lambda c: _with(c, user_id={"data": [1.5, 2, 3, 4]}), ["user_id", "integers"]),
        (lambda c: _with(c, user_id={"shape": [2, 2]}), ["user_id", "shape"]),
        (lambda c: _with(c, user_id={"shape": [-4]}), ["user_id", "shape"]),
        (lambda c: _with(c, tag={"data": [1, 2, 3, 4]}), ["tag", "string"]),
        (lambda c: _with(c, tag={"data": None}), ["tag"]),
        (lambda c: [*json_inputs(c), json_inputs(c)[0]], ["twice"]),
        (lambda c: _with(c, freshness_days={"data": [1.0, 1e300, 2.0, 3.0]}), ["freshness_days"]),
    ],
)
def test_invalid_inputs_are_400(client: AppClient, mutate: Any, words: list[str]) -> None:
    columns = tensor_columns(4)
    r = client.post("/v2/models/egmn/infer", content=json.dumps({"inputs": mutate(columns)}))
    _v2_error(r, 400, *words)


@pytest.mark.parametrize(
    "parameters, outputs, words",
    [
        ({"quantiles": [0.5, 1.5]}, None, ["quantiles[1]"]),
        ({"quantiles": "x"}, None, ["quantiles"]),
        ({"intervals": [[5, 1]]}, None, ["intervals[0]"]),
        ({"quick_skip_threshold_s": "abc"}, None, ["quick_skip_threshold_s"]),
        ({"return_params": "yes"}, None, ["return_params"]),
        ({}, [{"name": "quantiles"}], ["quantiles"]),
        ({}, [{"name": "nope"}], ["nope"]),
    ],
)
def test_invalid_parameters_are_400(
    client: AppClient, parameters: dict[str, Any], outputs: Any, words: list[str]
) -> None:
    body: dict[str, Any] = {"inputs": json_inputs(tensor_columns(4)), "parameters": parameters}
    if outputs is not None:
        body["outputs"] = outputs
    _v2_error(client.post("/v2/models/egmn/infer", content=json.dumps(body)), 400, *words)


def test_malformed_bodies(client: AppClient) -> None:
    _v2_error(client.post("/v2/models/egmn/infer", content=b"{"), 400, "malformed")
    _v2_error(client.post("/v2/models/egmn/infer", content=json.dumps([])), 400)
    _v2_error(
        client.post("/v2/models/egmn/infer", content=json.dumps({"inputs": []})), 400, "inputs"
    )
    body, h = binary_body(tensor_columns(4))
    for bad_header in (str(len(body) + 1), "-1", "x"):
        r = client.post(
            "/v2/models/egmn/infer",
            content=body,
            headers={"Inference-Header-Content-Length": bad_header},
        )
        _v2_error(r, 400, "Inference-Header-Content-Length")
    r = client.post(
        "/v2/models/egmn/infer",
        content=body + b"\0\0",
        headers={"Inference-Header-Content-Length": str(h)},
    )
    _v2_error(r, 400, "binary data")
    r = client.post(
        "/v2/models/egmn/infer",
        content=body[:-3],
        headers={"Inference-Header-Content-Length": str(h)},
    )
    _v2_error(r, 400)


def test_unknown_model_limits_and_framework_errors(client: AppClient) -> None:
    body = {"inputs": json_inputs(tensor_columns(4))}
    _v2_error(client.post("/v2/models/nope/infer", content=json.dumps(body)), 404, "nope")
    _v2_error(client.get("/v2/models/nope"), 404)
    _v2_error(client.get("/v2/models/egmn/versions/9/ready"), 404)
    _v2_error(
        client.post("/v2/models/egmn/versions/x/infer", content=json.dumps(body)), 400, "version"
    )
    big = {"inputs": json_inputs(tensor_columns(301))}
    _v2_error(client.post("/v2/models/egmn/infer", content=json.dumps(big)), 413, "301")


# ----------------------------------------------------------------------------- Triton client


def _triton_inputs(http: Any, columns: dict[str, np.ndarray], binary: bool) -> list[Any]:
    inputs = []
    for name, arr in columns.items():
        tensor = http.InferInput(name, list(arr.shape), datatype(arr))
        tensor.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_triton_client(live: LiveServer, reference: Reference, binary: bool) -> None:
    http = pytest.importorskip("tritonclient.http")
    triton = http.InferenceServerClient(url=live.address)
    try:
        assert triton.is_server_live() and triton.is_server_ready()
        assert triton.is_model_ready("egmn")
        meta = triton.get_model_metadata("egmn")
        assert [i["name"] for i in meta["inputs"]] == manifest().source_columns()
        columns = tensor_columns(40, start=1000)
        columns["duration_ms"][[0, 7]] = np.nan
        names = ["expected_watch_time_s", "point_s", "std_s", "quick_skip_prob"]
        names += ["quantiles", "interval_mass"]
        outputs = [http.InferRequestedOutput(n, binary_data=binary) for n in names]
        result = triton.infer(
            "egmn",
            _triton_inputs(http, columns, binary),
            outputs=outputs,
            parameters={"quantiles": LEVELS, "intervals": INTERVALS},
        )
        got = {n: result.as_numpy(n) for n in names}
        check_against_reference(got, reference, columns, 3.0)
        # no outputs named: the client asks for all of them in binary
        result = triton.infer(
            "egmn", _triton_inputs(http, columns, binary), model_version=SERVED_VERSION
        )
        np.testing.assert_array_equal(
            result.as_numpy("expected_watch_time_s"), got["expected_watch_time_s"]
        )
        assert result.as_numpy("quantiles") is None
        exc_type = pytest.importorskip("tritonclient.utils").InferenceServerException
        # tab is a request-time column (duration_ms, a video-table one, would be looked up)
        partial = {k: v for k, v in columns.items() if k != "tab"}
        with pytest.raises(exc_type) as info:
            triton.infer("egmn", _triton_inputs(http, partial, binary))
        assert info.value.status() == "400" and "'tab'" in info.value.message()
        with pytest.raises(exc_type) as info:
            triton.infer("nope", _triton_inputs(http, columns, binary))
        assert info.value.status() == "404"
    finally:
        triton.close()
