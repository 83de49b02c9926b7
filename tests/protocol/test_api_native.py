"""The native HTTP API against the shipped model, through the real ASGI app (httpx)."""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from service.app import _chain_shutdown_signals, create_app
from service.config import Settings
from service.runtime.model import SessionConfig
from service.runtime.repository import ModelRepository, load_repository
from service.runtime.state import ServiceState
from tests.support import MODELS
from tests.support.api import (
    EGMN_VERSIONS,
    SERVED_VERSION,
    AppClient,
    Reference,
    app_client,
    chunks,
    request_rows,
)

LEVELS = [0.1, 0.5, 0.9]
INTERVALS = [[0, 3], [3, 10], [10, None]]


@pytest.fixture(scope="module")
def client(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository)


@pytest.fixture(scope="module")
def small_limits(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository, max_request_rows=20, max_body_bytes=32 * 1024)


@pytest.fixture(scope="module")
def rows256() -> tuple[dict[str, list[Any]], dict[str, np.ndarray]]:
    return request_rows(256)


def _close(got: Any, want: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- predictions


def test_columnar_prediction_equals_direct_computation(
    client: AppClient, reference: Reference, rows256: Any
) -> None:
    features, columns = rows256
    body = {
        "features": features,
        "quantiles": LEVELS,
        "intervals": INTERVALS,
        "return_params": True,
    }
    r = client.post("/v1/models/egmn/predict", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    got = r.json()
    dist = reference.distribution(columns)
    assert (got["model"], got["version"], got["family"], got["n"]) == (
        "egmn",
        SERVED_VERSION,
        "egm",
        256,
    )
    assert got["quick_skip_threshold_s"] == reference.manifest.quick_skip_threshold_s
    _close(got["expected_watch_time_s"], dist.mean())
    _close(got["point_s"], reference.point(dist))
    _close(got["std_s"], dist.stddev())
    _close(got["quick_skip_prob"], dist.cdf(reference.manifest.quick_skip_threshold_s))
    assert got["quantiles"]["levels"] == LEVELS
    _close(got["quantiles"]["values_s"], dist.icdf(np.array(LEVELS)))
    assert got["intervals"]["edges_s"] == INTERVALS
    edges = np.array([[0, 3], [3, 10], [10, np.inf]])
    _close(got["intervals"]["mass"], dist.interval_mass(edges))
    np.testing.assert_allclose(np.sum(got["intervals"]["mass"], axis=1), 1.0, atol=1e-9)
    for name, value in dist.params().items():
        _close(got["params"][name], value)
    # the two point numbers really differ: the mean is not the paper's point
    assert not np.allclose(got["expected_watch_time_s"], got["point_s"])


def test_row_form_gives_the_same_answer(client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    n = 40
    instances = [{k: v[i] for k, v in features.items()} for i in range(n)]
    columnar = {k: v[:n] for k, v in features.items()}
    extras = {"quantiles": [0.5], "intervals": [[0, 5]], "quick_skip_threshold_s": 1.5}
    a = client.post("/v1/predict", json={"features": columnar, **extras})
    b = client.post("/v1/predict", json={"instances": instances, **extras})
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()


def test_rows_come_back_in_request_order(client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    forward = client.post("/v1/predict", json={"features": features}).json()
    backward = {k: v[::-1] for k, v in features.items()}
    reverse = client.post("/v1/predict", json={"features": backward}).json()
    assert reverse["expected_watch_time_s"] == forward["expected_watch_time_s"][::-1]
    assert reverse["quick_skip_prob"] == forward["quick_skip_prob"][::-1]


def test_default_bare_and_versioned_routes_agree(client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    body = {"features": {k: v[:5] for k, v in features.items()}}
    answers = [
        client.post(url, json=body).json()
        for url in (
            "/v1/predict",
            "/v1/models/egmn/predict",
            f"/v1/models/egmn/versions/{SERVED_VERSION}/predict",
        )
    ]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["version"] == SERVED_VERSION
    if len(EGMN_VERSIONS) > 1:  # an older version stays reachable by its number, and differs
        older = client.post(f"/v1/models/egmn/versions/{EGMN_VERSIONS[0]}/predict", json=body)
        assert older.status_code == 200 and older.json()["version"] == EGMN_VERSIONS[0]
        assert older.json()["expected_watch_time_s"] != answers[0]["expected_watch_time_s"]
    assert answers[0]["model"] == "egmn"  # the headline model, whatever else is served


def test_threshold_nulls_and_unused_columns(
    client: AppClient, reference: Reference, rows256: Any
) -> None:
    features, columns = rows256
    n = 30
    feats = {k: v[:n] for k, v in features.items()}
    cols = {k: v[:n] for k, v in columns.items()}
    # missing values in a numeric and a string column, an unseen id, and a column no model reads
    feats["duration_ms"] = [None] * 10 + feats["duration_ms"][10:]
    cols["duration_ms"] = np.concatenate([np.full(10, np.nan), cols["duration_ms"][10:]])
    feats["tag"] = [None] * n
    cols["tag"] = np.array([None] * n, dtype=object)
    feats["user_id"] = [10**12] * n
    cols["user_id"] = np.full(n, 10**12)
    feats["not_a_feature"] = ["x"] * 3
    r = client.post("/v1/predict", json={"features": feats, "quick_skip_threshold_s": 7.5})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "egmn"  # the reference below is EGMN's
    dist = reference.distribution(cols)
    assert r.json()["quick_skip_threshold_s"] == 7.5
    _close(r.json()["quick_skip_prob"], dist.cdf(7.5))
    _close(r.json()["expected_watch_time_s"], dist.mean())
    assert "quantiles" not in r.json() and "intervals" not in r.json() and "params" not in r.json()


def test_empty_batch(client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    r = client.post("/v1/predict", json={"features": {k: [] for k in features}, "quantiles": [0.5]})
    assert r.status_code == 200, r.text
    assert r.json()["n"] == 0 and r.json()["expected_watch_time_s"] == []
    assert r.json()["quantiles"]["values_s"] == []


def test_concurrent_requests_each_get_their_own_rows(client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    calls = [
        (
            "POST",
            "/v1/predict",
            {"json": {"features": {k: v[i : i + 7] for k, v in features.items()}}},
        )
        for i in range(0, 70, 7)
    ]
    alone = client.post("/v1/predict", json={"features": {k: v[:70] for k, v in features.items()}})
    merged: list[float] = []
    for r in client.gather(calls):
        assert r.status_code == 200
        merged += r.json()["expected_watch_time_s"]
    np.testing.assert_allclose(merged, alone.json()["expected_watch_time_s"], rtol=1e-6)


# ----------------------------------------------------------------------------- metadata, health


def test_models_listing_and_manifest(client: AppClient) -> None:
    listing = client.get("/v1/models")
    assert listing.status_code == 200
    assert listing.json()["default"] == "egmn"
    entries = listing.json()["models"]
    on_disk_dirs = sorted(
        (p.parent.parent.name, p.parent.name) for p in MODELS.glob("*/*/manifest.json")
    )
    assert sorted((e["name"], e["version"]) for e in entries) == on_disk_dirs
    assert [e["name"] for e in entries if e["default"] is True] == ["egmn"]
    egmn = [e for e in entries if e["name"] == "egmn"]
    assert [e["version"] for e in egmn] == EGMN_VERSIONS
    assert [e["version"] for e in egmn if e["default"] is True] == [SERVED_VERSION]
    detail = client.get("/v1/models/egmn").json()
    on_disk = json.loads((MODELS / "egmn" / SERVED_VERSION / "manifest.json").read_text())
    # Vocabularies (training ids) are published as their size and hash only.
    vocabularies = {
        f["name"]: f.pop("vocabulary") for f in on_disk["features"] if "vocabulary" in f
    }
    published = {f["name"]: f for f in detail["manifest"]["features"]}
    for name, vocabulary in vocabularies.items():
        compact = json.dumps(vocabulary, separators=(",", ":"), ensure_ascii=False)
        assert published[name].pop("vocabulary_size") == len(vocabulary)
        digest = hashlib.sha256(compact.encode()).hexdigest()
        assert published[name].pop("vocabulary_sha256") == digest
    assert detail["manifest"] == on_disk
    assert detail["versions"] == EGMN_VERSIONS
    assert detail["feature_columns"] == list(
        dict.fromkeys(f["source"] for f in on_disk["features"])
    )
    by_version = client.get(f"/v1/models/egmn/versions/{SERVED_VERSION}").json()
    assert by_version == client.get("/v1/models/egmn").json()


def test_manifest_with_vocabularies_when_configured(repository: ModelRepository) -> None:
    on_disk = json.loads((MODELS / "egmn" / SERVED_VERSION / "manifest.json").read_text())
    for client in app_client(repository, publish_vocabularies=True):
        assert client.get("/v1/models/egmn").json()["manifest"] == on_disk


def test_health(client: AppClient) -> None:
    assert client.get("/healthz").json() == {"live": True}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"ready": True}


def test_not_ready_before_loading() -> None:
    app = create_app(Settings(model_repository=MODELS), handle_signals=False)
    client = AppClient(app, lifespan=False)  # the lifespan loads the models: not run here
    try:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        r = client.post("/v1/predict", json={"features": {}})
        assert r.status_code == 503 and r.json()["code"] == "not_ready"
        assert client.get("/v1/models").status_code == 503
    finally:
        client.close()


def test_lifespan_loads_the_repository_and_shutdown_drops_readiness(rows256: Any) -> None:
    app = create_app(Settings(model_repository=MODELS, warmup_rows=4), handle_signals=False)
    client = AppClient(app)
    try:
        assert client.get("/readyz").status_code == 200
        state: ServiceState = app.state.service
        state.begin_shutdown()
        assert client.get("/readyz").status_code == 503
        # requests still arriving while draining are answered, not refused
        features, _ = rows256
        body = {"features": {k: v[:3] for k, v in features.items()}}
        assert client.post("/v1/predict", json=body).status_code == 200
    finally:
        client.close()


def test_sigterm_drops_readiness_then_runs_the_previous_handler() -> None:
    calls: list[int] = []
    original = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
        state = ServiceState(repository=None)
        _chain_shutdown_signals(state)
        assert not state.shutting_down
        signal.raise_signal(signal.SIGTERM)
        assert state.shutting_down and calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original)
        signal.signal(signal.SIGINT, signal.default_int_handler)


# ----------------------------------------------------------------------------- errors


def _body(features: dict[str, list[Any]], n: int = 4, **extra: Any) -> dict[str, Any]:
    return {"features": {k: v[:n] for k, v in features.items()}, **extra}


def _error(r: Any, status: int, field: str | None, row: int | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"error", "code", "field", "row"}
    assert err["field"] == field, err
    assert err["row"] == row, err
    if field is not None:
        assert field in err["error"]
    return dict(err)


@pytest.mark.parametrize(
    "raw, field",
    [
        (b'{"features": ', "body"),
        (b'{"features": {"duration_ms": [NaN]}}', "body"),
        (b'{"features": {"duration_ms": [Infinity]}}', "body"),
        (b'{"features": {"duration_ms": [-Infinity]}}', "body"),
        (b"\xff\xfe", "body"),
        (b"", "body"),
    ],
)
def test_malformed_json(client: AppClient, raw: bytes, field: str) -> None:
    err = _error(client.post("/v1/predict", content=raw), 422, field)
    assert err["code"] == "malformed_json"


def test_nan_in_a_valid_looking_body_is_refused(client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    text = orjson.dumps(_body(features, 3)).decode()
    text = text.replace('"duration_ms":[', '"duration_ms":[NaN,', 1)
    _error(client.post("/v1/predict", content=text.encode()), 422, "body")


def _mutated(features: dict[str, list[Any]], column: str, values: Any) -> dict[str, Any]:
    body = _body(features)
    body["features"][column] = values
    return body


@pytest.mark.parametrize(
    "column, values, field, row",
    [
        ("duration_ms", [1000, 2000, "long", 4000], "features.duration_ms", 2),
        ("duration_ms", [1000, {"ms": 1}, 3, 4], "features.duration_ms", 1),
        ("duration_ms", [[1], [2], [3], [4]], "features.duration_ms", 0),
        ("duration_ms", [1, 2, [3, 4], 5], "features.duration_ms", 2),
        ("duration_ms", "1000", "features.duration_ms", None),
        ("duration_ms", None, "features.duration_ms", None),
        ("user_id", [1, 2, "x", None], "features.user_id", 2),
        ("video_id", [1, 2], "features.video_id", 2),
        ("video_id", [1, 2, 3, 4, 5, 6], "features.video_id", 4),
        ("freshness_days", [1.0, 1e300, 2.0, 3.0], "features.freshness_days", 1),
        ("freshness_days", [1, 2, 3, 10**400], "body", None),  # past a double: not JSON
        ("freshness_days", [None, 2, "3", 4], "features.freshness_days", 2),
        ("tag", ["a", None, {"b": 1}, "c"], "features.tag", 2),
        ("tag", ["a", "b", ["c"], "d"], "features.tag", 2),
    ],
)
def test_wrong_values_name_field_and_row(
    client: AppClient, rows256: Any, column: str, values: Any, field: str, row: int | None
) -> None:
    features, _ = rows256
    _error(client.post("/v1/predict", json=_mutated(features, column, values)), 422, field, row)


def test_missing_feature_column(client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    body = _body(features)
    del body["features"]["hourmin"]
    _error(client.post("/v1/predict", json=body), 422, "features.hourmin")


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"quantiles": [0.5, 1.0]}, "quantiles[1]"),
        ({"quantiles": [0.0]}, "quantiles[0]"),
        ({"quantiles": [-0.1, 0.5]}, "quantiles[0]"),
        ({"quantiles": ["0.5"]}, "quantiles[0]"),
        ({"quantiles": [True]}, "quantiles[0]"),
        ({"quantiles": 0.5}, "quantiles"),
        ({"quantiles": [0.5] * 101}, "quantiles"),
        ({"intervals": [[0, 3], [10, 3]]}, "intervals[1]"),
        ({"intervals": [[0, 3, 5]]}, "intervals[0]"),
        ({"intervals": [[None, 3]]}, "intervals[0][0]"),
        ({"intervals": [0, 3]}, "intervals[0]"),
        ({"intervals": [[0, "inf"]]}, "intervals[0][1]"),
        ({"intervals": [[0, 1]] * 101}, "intervals"),
        ({"quick_skip_threshold_s": -1}, "quick_skip_threshold_s"),
        ({"quick_skip_threshold_s": "3"}, "quick_skip_threshold_s"),
        ({"return_params": "yes"}, "return_params"),
        ({"quantile": [0.5]}, "quantile"),
    ],
)
def test_invalid_options(client: AppClient, rows256: Any, extra: Any, field: str) -> None:
    features, _ = rows256
    _error(client.post("/v1/predict", json=_body(features, **extra)), 422, field)


def test_features_and_instances_exactly_one(client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    both = {**_body(features), "instances": []}
    _error(client.post("/v1/predict", json=both), 422, "features")
    _error(client.post("/v1/predict", json={"quantiles": [0.5]}), 422, "features")
    _error(client.post("/v1/predict", json=[1, 2]), 422, "body")
    _error(client.post("/v1/predict", json={"features": [1, 2]}), 422, "features")


def test_instances_errors(client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    rows = [{k: v[i] for k, v in features.items()} for i in range(4)]
    del rows[2]["video_id"]
    _error(client.post("/v1/predict", json={"instances": rows}), 422, "instances.video_id", 2)
    rows = [{k: v[i] for k, v in features.items()} for i in range(4)]
    rows[3]["duration_ms"] = "long"
    _error(client.post("/v1/predict", json={"instances": rows}), 422, "instances.duration_ms", 3)
    rows[3]["duration_ms"] = 1000
    rows[1]["freshness_days"] = 1e300  # beyond float32: the encoder names it
    _error(client.post("/v1/predict", json={"instances": rows}), 422, "instances.freshness_days", 1)
    rows[3] = [1, 2]  # type: ignore[call-overload]
    _error(client.post("/v1/predict", json={"instances": rows}), 422, "instances", 3)
    _error(client.post("/v1/predict", json={"instances": {"a": 1}}), 422, "instances")


def test_unknown_model_and_version(client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    err = _error(client.post("/v1/models/nope/predict", json=_body(features)), 404, "model")
    assert err["code"] == "unknown_model"
    _error(client.post("/v1/models/egmn/versions/7/predict", json=_body(features)), 404, "model")
    _error(client.get("/v1/models/nope"), 404, "model")
    _error(client.get(f"/v1/models/egmn/versions/{int(SERVED_VERSION) + 1}"), 404, "model")


def test_framework_errors_use_the_same_format(client: AppClient) -> None:
    _error(client.post("/v1/models/egmn/versions/latest/predict", json={}), 422, "version")
    err = _error(client.get("/v1/nothing-here"), 404, None)
    assert err["code"] == "not_found"
    err = _error(client.get("/v1/predict"), 405, None)
    assert err["code"] == "method_not_allowed"


def test_row_limit(small_limits: AppClient, client: AppClient, rows256: Any) -> None:
    features, _ = rows256
    r = small_limits.post("/v1/predict", json=_body(features, 21))
    assert _error(r, 413, "features")["code"] == "too_large"
    assert small_limits.post("/v1/predict", json=_body(features, 20)).status_code == 200
    rows = [{k: v[0] for k, v in features.items()}] * 21
    _error(small_limits.post("/v1/predict", json={"instances": rows}), 413, "instances")
    # the default limit is 10,000 rows
    assert Settings(model_repository=MODELS).max_request_rows == 10_000
    big = {k: v[:1] * 10_001 for k, v in features.items()}
    _error(client.post("/v1/predict", json={"features": big}), 413, "features")


def test_body_limit(small_limits: AppClient, rows256: Any) -> None:
    features, _ = rows256
    data = orjson.dumps(_body(features, 256))
    assert len(data) > 32 * 1024
    r = small_limits.post("/v1/predict", content=data)
    assert _error(r, 413, None)["code"] == "too_large"
    r = small_limits.post("/v1/predict", content=chunks(data, 4096))
    assert _error(r, 413, None)["code"] == "too_large"
    assert Settings(model_repository=MODELS).max_body_bytes == 32 * 1024 * 1024


def test_a_bad_request_does_not_disturb_concurrent_good_ones(
    client: AppClient, rows256: Any
) -> None:
    features, _ = rows256
    good = {"json": _body(features, 20)}
    bad = {"json": _mutated(features, "duration_ms", [1, 2, "x", 4])}
    out = client.gather([("POST", "/v1/predict", good if i % 2 else bad) for i in range(10)])
    assert [r.status_code for r in out] == [422, 200] * 5
    first = out[1].json()
    assert all(r.json() == first for r in out[1::2])


def test_broken_model_is_refused_and_others_serve(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    for name in ("egmn", "broken"):
        shutil.copytree(MODELS / "egmn" / "1", tmp_path / name / "1")
    manifest = json.loads((tmp_path / "broken" / "1" / "manifest.json").read_text())
    manifest["name"] = "broken"
    (tmp_path / "broken" / "1" / "manifest.json").write_text(json.dumps(manifest))
    # and a second version of egmn whose model file was altered after export
    shutil.copytree(MODELS / "egmn" / "1", tmp_path / "egmn" / "2")
    m2 = json.loads((tmp_path / "egmn" / "2" / "manifest.json").read_text())
    m2["version"] = "2"
    (tmp_path / "egmn" / "2" / "manifest.json").write_text(json.dumps(m2))
    with (tmp_path / "egmn" / "2" / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    # and a manifest written by a newer exporter
    shutil.copytree(MODELS / "egmn" / "1", tmp_path / "future" / "1")
    m3 = json.loads((tmp_path / "future" / "1" / "manifest.json").read_text())
    m3.update(name="future", schema_version=2)
    (tmp_path / "future" / "1" / "manifest.json").write_text(json.dumps(m3))
    with caplog.at_level("INFO", logger="watchtime"):
        repo = load_repository(tmp_path, SessionConfig(intra_op_threads=1), warmup_rows=2)
    refusals = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(refusals) == 2, refusals
    assert any("egmn/2" in m and "sha256" in m for m in refusals), refusals
    assert any("future/1" in m and "schema_version" in m for m in refusals), refusals
    # "broken" has a valid manifest and graph (sha256 matches), so it loads; egmn/2 does not
    assert [(m.name, m.version) for m in repo] == [("broken", "1"), ("egmn", "1")]
    assert repo.get("egmn").version == "1"
