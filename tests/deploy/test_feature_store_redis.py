"""The Redis feature store against a real ``redis-server`` on loopback: publishing with a
version switch, ids-only answers identical to full-column ones (native, v2 and gRPC), a
Redis that is down or stops under load (no request lost), and the 503 policy."""

from __future__ import annotations

import json
import math
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from model_export.publish import VERSIONS
from service.app import create_app
from service.config import Settings
from service.runtime.redis_store import POINTER, PREFIX
from service.runtime.repository import ModelRepository
from tests.support import MODELS, ROOT, free_port
from tests.support.api import AppClient, client_for, request_rows
from tests.support.grpc import Client, outputs_of, request
from tests.support.hostile import ServiceProcess, metric_value
from tests.support.hostile import request as http_request
from tests.support.metrics import delta, scrape
from tests.support.redis import RedisServer, publish
from tests.support.v2 import json_inputs, tensor_columns

FEATURE_TABLES = ROOT / "feature_store" / "kuairand.npz"
REQUEST_TIME = ["user_id", "video_id", "tab", "hourmin", "date"]
OUTPUTS = ["expected_watch_time_s", "point_s", "std_s", "quick_skip_prob"]


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    redis_server = RedisServer()
    try:
        done = publish(redis_server.url, "--quiet")
        assert done.returncode == 0, done.stderr
        assert "published feature tables version" in done.stdout
        yield redis_server
    finally:
        redis_server.stop()


def _app(repository: ModelRepository, **settings: Any) -> Iterator[AppClient]:
    app = create_app(
        Settings(model_repository=MODELS, **settings), repository, handle_signals=False
    )
    yield from client_for(app)


@pytest.fixture(scope="module")
def client(server: RedisServer, repository: ModelRepository) -> Iterator[AppClient]:
    yield from _app(repository, feature_store=server.url, feature_store_timeout_ms=2000.0)


def test_publish_switches_versions_in_one_step(server: RedisServer) -> None:
    r = redis.Redis.from_url(server.url, decode_responses=True)
    first = r.get(POINTER)
    assert first is not None and r.hexists(f"{PREFIX}:{first}:user", "0")
    assert r.hexists(f"{PREFIX}:{first}:video", "0")
    for _ in range(2):
        done = publish(server.url, "--quiet")
        assert done.returncode == 0, done.stderr
    versions = r.lrange(VERSIONS, 0, -1)
    assert len(versions) == 2 and versions[-1] == r.get(POINTER) != first  # --keep 1
    assert not r.exists(f"{PREFIX}:{first}:user")  # the oldest is gone, whole
    assert next(iter(r.scan_iter(match=f"{PREFIX}:{first}:*")), None) is None


def test_a_row_is_its_columns_as_float64_in_schema_order(server: RedisServer) -> None:
    """The layout other readers rely on, read with struct against the tables file."""
    r = redis.Redis.from_url(server.url)
    version = r.get(POINTER).decode()  # type: ignore[union-attr]
    schema = json.loads(r.get(f"{PREFIX}:{version}:schema"))  # type: ignore[arg-type]
    lists = json.loads(r.get(f"{PREFIX}:{version}:categories"))  # type: ignore[arg-type]
    tables = np.load(FEATURE_TABLES)
    entities = {e["name"]: e for e in schema["entities"]}
    for entity in ("user", "video"):
        columns = list(entities[entity]["columns"].items())
        ids = tables[f"{entity}.ids"]
        for i in (0, ids.size // 2, ids.size - 1):
            raw = r.hget(f"{PREFIX}:{version}:{entity}", str(int(ids[i])))
            assert raw is not None and len(raw) == 8 * len(columns)
            row = struct.unpack(f"<{len(columns)}d", raw)
            for (name, kind), value in zip(columns, row, strict=True):
                stored = tables[f"{entity}.{name}"][i]
                if kind == "text":
                    text = tables[f"{entity}.{name}.categories"][stored] if stored >= 0 else None
                    got = None if math.isnan(value) else lists[entity][name][int(value)]
                    assert got == text, (entity, name)
                elif math.isnan(float(stored)):
                    assert math.isnan(value), (entity, name)
                else:
                    assert value == float(stored), (entity, name)
    assert r.hget(f"{PREFIX}:{version}:video", "-5") is None


def _predict(client: AppClient, features: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"features": features, "quantiles": [0.1, 0.5, 0.9]}).encode()
    response = client.post("/v1/models/egmn/predict", content=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_redis_answers_like_every_column(client: AppClient) -> None:
    features, _ = request_rows(300, 1500)
    full = _predict(client, features)
    assert _predict(client, {k: features[k] for k in REQUEST_TIME}) == full
    columns = tensor_columns(100, 4000)
    answers = []
    for sent in (columns, {k: columns[k] for k in REQUEST_TIME}):
        body = json.dumps({"inputs": json_inputs(sent)}).encode()
        response = client.post("/v2/models/egmn/infer", content=body)
        assert response.status_code == 200, response.text
        answers.append(response.json()["outputs"])
    assert answers[0] == answers[1]


def test_redis_misses_are_counted(client: AppClient) -> None:
    features, _ = request_rows(3, 10)
    sent = {k: features[k] for k in REQUEST_TIME}
    sent["user_id"] = [sent["user_id"][0], 77_777_777, None]
    before = scrape(client)
    assert len(_predict(client, sent)["expected_watch_time_s"]) == 3
    misses = "watchtime_feature_lookup_misses_total"
    assert delta(before, scrape(client), misses, entity="user") == 2


def test_a_corrupt_row_is_a_counted_error_not_a_500(
    server: RedisServer, repository: ModelRepository
) -> None:
    """A row of the wrong length (a foreign writer, a torn value): the request is answered
    with the columns missing and the lookup counted as failed."""
    r = redis.Redis.from_url(server.url)
    version = r.get(POINTER).decode()  # type: ignore[union-attr]
    features, _ = request_rows(4, 10)
    sent = {k: features[k] for k in REQUEST_TIME}
    key, field = f"{PREFIX}:{version}:video", str(sent["video_id"][0])
    original = r.hget(key, field)
    assert original is not None
    r.hset(key, field, b"\x01" * 7)
    try:
        for client in _app(repository, feature_store=server.url, feature_store_timeout_ms=2000.0):
            before = scrape(client)
            got = _predict(client, sent)
            assert len(got["expected_watch_time_s"]) == 4
            assert all(np.isfinite(got["expected_watch_time_s"]))
            errors = "watchtime_feature_lookup_errors_total"
            assert delta(before, scrape(client), errors, reason="unavailable", store="redis") == 1
    finally:
        r.hset(key, field, original)


@pytest.fixture(scope="module")
def nowhere(repository: ModelRepository) -> Iterator[AppClient]:
    """A Redis URL where nothing listens."""
    yield from _app(repository, feature_store=f"redis://127.0.0.1:{free_port()}/0")


@pytest.fixture(scope="module")
def nowhere_required(repository: ModelRepository) -> Iterator[AppClient]:
    url = f"redis://127.0.0.1:{free_port()}/0"
    yield from _app(repository, feature_store=url, feature_store_required=True)


def test_redis_down_gives_missing_values_or_503(
    nowhere: AppClient, nowhere_required: AppClient
) -> None:
    features, _ = request_rows(5, 10)
    sent = {k: features[k] for k in REQUEST_TIME}
    got = _predict(nowhere, sent)
    assert all(np.isfinite(got["expected_watch_time_s"]))
    text = nowhere.get("/metrics").text
    assert 'watchtime_feature_lookup_errors_total{reason="unavailable",store="redis"}' in text
    # A refused connection is "unavailable"; on a loaded machine the connect may outlast the
    # lookup timeout first and count as "timeout": either way the failure is counted.
    counted = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("watchtime_feature_lookup_errors_total{")
        and 'store="redis"' in line
        and ('reason="unavailable"' in line or 'reason="timeout"' in line)
    )
    assert counted >= 1
    # a request with every column needs no lookup: unaffected by the policy
    assert _predict(nowhere_required, features)["n"] == 5
    response = nowhere_required.post(
        "/v1/models/egmn/predict", content=orjson.dumps({"features": sent})
    )
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["code"] == "feature_store_unavailable"
    columns = {k: v for k, v in tensor_columns(5, 10).items() if k in REQUEST_TIME}
    body = json.dumps({"inputs": json_inputs(columns)}).encode()
    response = nowhere_required.post("/v2/models/egmn/infer", content=body)
    assert response.status_code == 503 and "feature store" in response.json()["error"]


def test_grpc_over_redis_and_redis_stopping_under_load(repository: ModelRepository) -> None:
    """A real service on Redis: gRPC ids-only equals every column; then Redis is stopped
    while two clients send a few hundred ids-only requests, and every one is answered."""
    own = RedisServer()
    service: ServiceProcess | None = None
    try:
        done = publish(own.url, "--quiet")
        assert done.returncode == 0, done.stderr
        service = ServiceProcess(
            grpc=True,
            env={"WATCHTIME_FEATURE_STORE": own.url, "WATCHTIME_FEATURE_STORE_TIMEOUT_MS": "200"},
        )
        service.wait_ready()
        grpc_client = Client(service.grpc_port)
        try:
            columns = tensor_columns(64, 5000)
            full = outputs_of(grpc_client.infer(request(columns)))
            short = outputs_of(grpc_client.infer(request({k: columns[k] for k in REQUEST_TIME})))
            for name in OUTPUTS:
                np.testing.assert_array_equal(short[name], full[name], err_msg=name)
        finally:
            grpc_client.close()

        features, _ = request_rows(32, 200)
        body = orjson.dumps({"features": {k: features[k] for k in REQUEST_TIME}})
        statuses: list[int] = []
        lock = threading.Lock()
        total, per_client = 300, 150

        def send() -> None:
            for _ in range(per_client):
                status, _, _ = http_request(
                    service.port, "POST", "/v1/models/egmn/predict", body,
                    {"Content-Type": "application/json"}, timeout=30,
                )  # fmt: skip
                with lock:
                    statuses.append(status)

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(statuses) < total // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        own.stop()  # Redis goes away mid-load
        for thread in threads:
            thread.join(timeout=120)
        assert len(statuses) == total
        assert statuses.count(200) == total, sorted(set(statuses))
        port = service.port
        errors = metric_value(port, "watchtime_feature_lookup_errors_total", store="redis")
        hits = metric_value(port, "watchtime_feature_lookup_hits_total", entity="video")
        assert errors >= 1 and hits >= 64
        print(f"\n{total} requests, Redis stopped after about {total // 3}: all 200, "
              f"{errors:.0f} lookup errors counted")  # fmt: skip
    finally:
        if service is not None:
            service.stop()
        own.stop()
