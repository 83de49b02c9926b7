"""Ids-only requests on every protocol, embedded feature store (the default): the same
numbers as the same test-day rows sent with every column; misses, sent columns winning,
and hostile ids answered like any other bad column."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from service.app import create_app
from service.config import Settings
from service.runtime.repository import ModelRepository
from tests.support import MODELS
from tests.support.api import AppClient, client_for, request_rows
from tests.support.grpc import Client, outputs_of, request
from tests.support.hostile import ServiceProcess, metric_value
from tests.support.v2 import json_inputs, tensor_columns

REQUEST_TIME = ["user_id", "video_id", "tab", "hourmin", "date"]
OUTPUTS = ["expected_watch_time_s", "point_s", "std_s", "quick_skip_prob"]
OPTIONS = {"quantiles": [0.1, 0.5, 0.9], "intervals": [[0, 3], [3, None]]}


@pytest.fixture(scope="module")
def client(repository: ModelRepository) -> Iterator[AppClient]:
    settings = Settings(model_repository=MODELS, max_request_rows=2000)
    yield from client_for(create_app(settings, repository, handle_signals=False))


@pytest.fixture(scope="module")
def no_store(repository: ModelRepository) -> Iterator[AppClient]:
    settings = Settings(model_repository=MODELS, feature_store="none")
    yield from client_for(create_app(settings, repository, handle_signals=False))


def predict(client: AppClient, doc: dict[str, Any]) -> dict[str, Any]:
    sent = json.dumps({**OPTIONS, **doc}).encode()  # json: ids beyond 64 bits too
    response = client.post("/v1/models/egmn/predict", content=sent)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids_only(features: dict[str, list[Any]], keep: list[str] = REQUEST_TIME) -> dict[str, Any]:
    return {k: features[k] for k in keep}


def test_native_ids_only_equals_every_column(client: AppClient) -> None:
    features, _ = request_rows(300, 500)
    full = predict(client, {"features": features})
    assert predict(client, {"features": ids_only(features)}) == full
    # the row form, and author_id sent by the client (the request-time columns)
    n = 50
    with_author = ids_only(features, [*REQUEST_TIME, "author_id", "is_lowactive_period"])
    instances = [{k: v[i] for k, v in with_author.items()} for i in range(n)]
    rows = predict(client, {"instances": instances})
    head = predict(client, {"features": {k: v[:n] for k, v in features.items()}})
    assert rows == head


def test_v2_ids_only_equals_every_column(client: AppClient) -> None:
    columns = tensor_columns(200, 900)
    short = {k: columns[k] for k in REQUEST_TIME}
    answers = []
    for sent in (columns, short):
        body = json.dumps({"inputs": json_inputs(sent)}).encode()
        response = client.post("/v2/models/egmn/infer", content=body)
        assert response.status_code == 200, response.text
        answers.append({o["name"]: o["data"] for o in response.json()["outputs"]})
    assert answers[0] == answers[1]
    # binary tensors too
    header = {
        "inputs": [
            {"name": k, "shape": [len(v)], "datatype": "INT64",
             "parameters": {"binary_data_size": 8 * len(v)}}
            for k, v in short.items()
        ],
        "outputs": [{"name": name} for name in OUTPUTS],
    }  # fmt: skip
    head = json.dumps(header).encode()
    blob = b"".join(v.astype("<i8").tobytes() for v in short.values())
    response = client.post(
        "/v2/models/egmn/infer",
        content=head + blob,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert response.status_code == 200, response.text
    got = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert got == {name: answers[0][name] for name in OUTPUTS}


def test_sent_columns_win(client: AppClient) -> None:
    features, _ = request_rows(40, 100)
    changed = {**features, "user_active_degree": ["high_active"] * 40, "tag": ["8"] * 40}
    want = predict(client, {"features": changed})
    sent = {**ids_only(features), "user_active_degree": changed["user_active_degree"]}
    sent["tag"] = changed["tag"]
    assert predict(client, {"features": sent}) == want
    assert want != predict(client, {"features": features})


def _metric(client: AppClient, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_unknown_ids_are_misses_not_errors(client: AppClient) -> None:
    features, _ = request_rows(4, 10)
    sent = ids_only(features)
    sent["user_id"] = [sent["user_id"][0], 999_999_999, None, 2.5]
    sent["video_id"] = [sent["video_id"][0], -1, 10**30, None]
    misses = _metric(client, "watchtime_feature_lookup_misses_total", entity="user")
    hits = _metric(client, "watchtime_feature_lookup_hits_total", entity="video")
    got = predict(client, {"features": sent})
    assert len(got["expected_watch_time_s"]) == 4
    assert all(np.isfinite(got["expected_watch_time_s"]))
    assert _metric(client, "watchtime_feature_lookup_misses_total", entity="user") == misses + 3
    assert _metric(client, "watchtime_feature_lookup_hits_total", entity="video") == hits + 1
    count = _metric(client, "watchtime_feature_lookup_duration_seconds_count", store="embedded")
    assert count >= 1


@pytest.mark.parametrize(
    ("column", "values", "status", "words"),
    [
        ("user_id", [1, "abc", 3], 422, ["features.user_id, row 1", "expected a number"]),
        ("video_id", [1, "x" * 100_000, 3], 422, ["features.video_id, row 1", "characters"]),
        ("user_id", [1, [2], 3], 422, ["features.user_id, row 1", "scalar"]),
        # a JSON boolean is the number 1 in any number column, ids too (as before)
        ("video_id", [1, True, 3], 200, []),
        ("user_id", [1, 2], 422, ["rows but 'user_id' has 2"]),
    ],
    ids=["text", "long-text", "list", "bool", "ragged"],
)
def test_garbage_ids_are_the_errors_of_any_column(
    client: AppClient, column: str, values: list[Any], status: int, words: list[str]
) -> None:
    features, _ = request_rows(3, 20)
    sent = {**ids_only(features), column: values}
    response = client.post("/v1/models/egmn/predict", content=orjson.dumps({"features": sent}))
    assert response.status_code == status, response.text
    assert len(response.text) < 1000
    for word in words:
        assert word in response.json()["error"]


def test_without_the_key_the_column_is_named(client: AppClient) -> None:
    features, _ = request_rows(3, 20)
    sent = {k: v for k, v in ids_only(features).items() if k != "video_id"}
    response = client.post("/v1/models/egmn/predict", content=orjson.dumps({"features": sent}))
    assert response.status_code == 422
    assert "features.video_id: required feature column is missing" in response.json()["error"]
    v2 = {k: v for k, v in tensor_columns(3).items() if k in REQUEST_TIME and k != "user_id"}
    body = json.dumps({"inputs": json_inputs(v2)}).encode()
    response = client.post("/v2/models/egmn/infer", content=body)
    assert response.status_code == 400 and "'user_id'" in response.json()["error"]


def test_huge_ids_only_batches_are_bounded(client: AppClient) -> None:
    n = 2001  # one over the limit of this app
    big = {k: [1] * n for k in REQUEST_TIME}
    response = client.post("/v1/models/egmn/predict", content=orjson.dumps({"features": big}))
    assert response.status_code == 413
    big = {"user_id": list(range(2000)), "video_id": list(range(2000))}
    big |= {"tab": [1] * 2000, "hourmin": [1230] * 2000, "date": [20220504] * 2000}
    response = client.post("/v1/models/egmn/predict", content=orjson.dumps({"features": big}))
    assert response.status_code == 200, response.text


def test_without_a_store_every_column_is_required(no_store: AppClient) -> None:
    features, _ = request_rows(3, 20)
    response = no_store.post(
        "/v1/models/egmn/predict", content=orjson.dumps({"features": ids_only(features)})
    )
    assert response.status_code == 422
    assert "required feature column is missing" in response.json()["error"]


def test_grpc_ids_only_equals_every_column(grpc_service: ServiceProcess) -> None:
    client = Client(grpc_service.grpc_port)
    try:
        columns = tensor_columns(128, 3000)
        short = {k: columns[k] for k in REQUEST_TIME}
        for raw in (True, False):
            full = outputs_of(client.infer(request(columns, raw=raw)))
            got = outputs_of(client.infer(request(short, raw=raw)))
            assert set(got) == set(full) == set(OUTPUTS)
            for name in OUTPUTS:
                np.testing.assert_array_equal(got[name], full[name], err_msg=name)
        hits = metric_value(
            grpc_service.port, "watchtime_feature_lookup_hits_total", entity="video"
        )
        assert hits == 2 * 128
    finally:
        client.close()
