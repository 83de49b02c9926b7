"""A model version's own tables (its history statistics) read from Redis, as the entity
tables are: published by ``publish-features --model-dir`` under the file's sha256, answered
exactly as the model directory's file answers, really read from Redis (a row changed there
changes the answer), and the file answering when Redis fails or does not hold them, the
failure counted (503 when the store is required)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import redis

from model_export.data import load_joined, split_by_day
from model_export.data.prepared import Prepared, prepare_split
from service.app import create_app
from service.config import Settings
from service.manifest import Manifest
from service.runtime.model import SessionConfig
from service.runtime.redis_store import model_table_key, model_tables_key
from service.runtime.repository import ModelRepository, load_repository
from tests.support import free_port
from tests.support.api import AppClient, client_for, json_columns
from tests.support.history import write_history_model
from tests.support.metrics import delta, scrape
from tests.support.redis import RedisServer, publish

pytestmark = pytest.mark.slow

REQUEST_TIME = ["user_id", "video_id", "author_id", "tab", "hourmin", "date"]


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    return prepare_split(split_by_day(load_joined()), history=True)


@pytest.fixture(scope="module")
def model_root(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_history_model(prepared, root)
    return root


@pytest.fixture(scope="module")
def repository(model_root: Path) -> ModelRepository:
    return load_repository(model_root, SessionConfig(intra_op_threads=1), warmup_rows=8)


@pytest.fixture(scope="module")
def server(model_root: Path) -> Iterator[RedisServer]:
    own = RedisServer()
    try:
        done = publish(own.url, "--quiet", "--model-dir", str(model_root / "hist" / "1"))
        assert done.returncode == 0, done.stderr
        assert "tables published as" in done.stdout
        yield own
    finally:
        own.stop()


def _client(root: Path, repository: ModelRepository, **settings: Any) -> Iterator[AppClient]:
    app = create_app(Settings(model_repository=root, **settings), repository, handle_signals=False)
    yield from client_for(app)


@pytest.fixture(scope="module")
def embedded(model_root: Path, repository: ModelRepository) -> Iterator[AppClient]:
    yield from _client(model_root, repository)


@pytest.fixture(scope="module")
def on_redis(
    model_root: Path, repository: ModelRepository, server: RedisServer
) -> Iterator[AppClient]:
    yield from _client(
        model_root, repository, feature_store=server.url, feature_store_timeout_ms=2000.0
    )


@pytest.fixture(scope="module")
def manifest(model_root: Path) -> Manifest:
    return Manifest.read(model_root / "hist" / "1" / "manifest.json")


def _rows(prepared: Prepared, n: int, columns: list[str]) -> dict[str, Any]:
    return json_columns(prepared.split.test.iloc[:n], columns)


def _means(client: AppClient, features: dict[str, Any]) -> np.ndarray:
    response = client.post("/v1/models/hist/predict", content=orjson.dumps({"features": features}))
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["expected_watch_time_s"])


HITS = ("watchtime_feature_lookup_hits_total", frozenset({("entity", "history:user_id")}))
ERRORS = "watchtime_feature_lookup_errors_total"


def test_publishing_again_is_a_no_op(server: RedisServer, model_root: Path) -> None:
    done = publish(server.url, "--quiet", "--model-dir", str(model_root / "hist" / "1"))
    assert done.returncode == 0 and "tables already published" in done.stdout
    done = publish(server.url, "--quiet", "--model-dir", str(model_root / "nope"))
    assert done.returncode == 2 and "no model directory" in done.stderr


def test_redis_answers_as_the_model_directory_does(
    prepared: Prepared, manifest: Manifest, embedded: AppClient, on_redis: AppClient
) -> None:
    features = _rows(prepared, 300, manifest.source_columns())
    before = scrape(on_redis).get(HITS, 0.0)  # a model table's series starts at its first use
    np.testing.assert_array_equal(_means(on_redis, features), _means(embedded, features))
    assert scrape(on_redis)[HITS] - before > 100  # most test-day users have earlier views
    # ids only: the entity columns and the model's tables both from Redis
    ids_only = _rows(prepared, 300, REQUEST_TIME)
    np.testing.assert_allclose(_means(on_redis, ids_only), _means(embedded, features), rtol=1e-12)


def test_the_statistics_come_from_redis(
    prepared: Prepared,
    manifest: Manifest,
    server: RedisServer,
    embedded: AppClient,
    on_redis: AppClient,
) -> None:
    """A user's row changed in Redis changes that user's answers, and only theirs."""
    features = _rows(prepared, 50, manifest.source_columns())
    assert manifest.history is not None
    key = model_table_key(manifest.history.sha256, "user_id")
    r = redis.Redis.from_url(server.url)
    user = str(features["user_id"][0])
    original = r.hget(key, user)
    assert isinstance(original, bytes)
    width = len(original) // 8
    try:
        r.hset(key, user, struct.pack(f"<{width}d", *([500.0] * width)))
        changed = _means(on_redis, features)
    finally:
        r.hset(key, user, original)
    same_user = np.asarray(features["user_id"]) == features["user_id"][0]
    reference = _means(embedded, features)
    assert not np.allclose(changed[same_user], reference[same_user])
    np.testing.assert_array_equal(changed[~same_user], reference[~same_user])
    np.testing.assert_array_equal(_means(on_redis, features), reference)


def test_unpublished_or_unreachable_tables_fall_back_to_the_file(
    prepared: Prepared,
    manifest: Manifest,
    model_root: Path,
    repository: ModelRepository,
    server: RedisServer,
    embedded: AppClient,
) -> None:
    features = _rows(prepared, 40, manifest.source_columns())
    reference = _means(embedded, features)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    for client in _client(model_root, repository, feature_store=nowhere):
        before = scrape(client)
        np.testing.assert_array_equal(_means(client, features), reference)
        after = scrape(client)
        failed = sum(
            delta(before, after, ERRORS, store="redis", reason=reason)
            for reason in ("unavailable", "timeout")
        )
        assert failed >= 1
    assert manifest.history is not None
    r = redis.Redis.from_url(server.url)
    marker = model_tables_key(manifest.history.sha256)
    layout = r.get(marker)
    r.delete(marker)
    try:
        for client in _client(model_root, repository, feature_store=server.url):
            before = scrape(client)
            np.testing.assert_array_equal(_means(client, features), reference)
            errors = delta(before, scrape(client), ERRORS, store="redis", reason="no_tables")
            assert errors >= 3  # user, video and author tables
        for client in _client(
            model_root, repository, feature_store=server.url, feature_store_required=True
        ):
            response = client.post(
                "/v1/models/hist/predict", content=orjson.dumps({"features": features})
            )
            assert response.status_code == 503
            assert response.json()["code"] == "feature_store_unavailable"
    finally:
        assert layout is not None
        r.set(marker, layout)
