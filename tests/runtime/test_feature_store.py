"""The embedded feature store: the shipped tables file, and lookups that give back, row by
row, the very columns the joined test-day log rows carry."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest

from model_export.data.feature_tables import build_tables
from service import metrics
from service.errors import FeatureError, FeatureStoreUnavailable
from service.manifest import Manifest
from service.runtime.features import encode_features
from service.runtime.fill import FeatureLookup
from service.runtime.store import EmbeddedStore, EntitySchema, load_embedded
from tests.support import ROOT
from tests.support.api import SHIPPED, held_out_day, request_rows

TABLES = ROOT / "feature_store" / "kuairand.npz"
#: what a ranking client knows at request time; the rest comes from the tables
REQUEST_TIME = ["user_id", "video_id", "tab", "hourmin", "date"]


@functools.cache
def store() -> EmbeddedStore:
    return load_embedded(TABLES)


@functools.cache
def manifest() -> Manifest:
    return Manifest.read(SHIPPED / "manifest.json")


def fill(
    columns: Mapping[str, np.ndarray], lookup: FeatureLookup | None = None
) -> Mapping[str, np.ndarray]:
    lookup = lookup or FeatureLookup(store().schema, store())
    n = len(next(iter(columns.values())))
    return asyncio.run(lookup.fill(manifest().source_columns(), columns, n))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "O" or b.dtype.kind == "O":
        return bool(a.tolist() == b.tolist())
    return bool(np.array_equal(a.astype(np.float64), b.astype(np.float64), equal_nan=True))


def test_the_shipped_tables_are_what_the_command_writes() -> None:
    _, arrays = build_tables()
    with np.load(TABLES, allow_pickle=False) as shipped:
        assert sorted(shipped.files) == sorted(arrays)
        for key, value in arrays.items():
            assert shipped[key].dtype == value.dtype, key
            np.testing.assert_array_equal(shipped[key], value, err_msg=key)
    assert TABLES.stat().st_size < 1_000_000
    licence = (TABLES.parent / "LICENSE").read_text()
    assert "Attribution-ShareAlike 4.0" in licence
    readme = (TABLES.parent / "README.md").read_text()
    assert "CC BY-SA 4.0" in readme and "KuaiRand" in readme
    assert "CC BY-SA 4.0" in store().schema.attribution


def test_every_test_day_row_gets_back_its_logged_columns() -> None:
    """All rows of the held-out day, ids only: each filled column equals the joined log's."""
    day = held_out_day()
    _, full = request_rows(len(day))
    sent = {name: full[name] for name in REQUEST_TIME}
    filled = fill(sent)
    assert set(filled) == set(full)
    for name, values in full.items():
        assert _same(filled[name], values), name
    # and so the model's inputs are the same, bit for bit
    got = encode_features(manifest(), filled)
    want = encode_features(manifest(), full)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_sent_columns_win_over_looked_up_ones() -> None:
    _, full = request_rows(8)
    sent = {name: full[name] for name in REQUEST_TIME}
    sent["user_active_degree"] = np.array(["high_active"] * 8, dtype=object)
    sent["duration_ms"] = np.full(8, np.nan)
    sent["freshness_days"] = np.arange(8, dtype=np.int64)
    filled = fill(sent)
    assert filled["user_active_degree"].tolist() == ["high_active"] * 8
    assert np.isnan(filled["duration_ms"]).all()
    assert filled["freshness_days"].tolist() == list(range(8))
    assert _same(filled["register_days"], full["register_days"])


def _count(metric: object, entity: str) -> float:
    return float(metric.labels(entity)._value.get())  # type: ignore[attr-defined]


def test_unknown_null_and_impossible_ids_are_counted_misses() -> None:
    _, full = request_rows(6)
    sent = {name: full[name] for name in REQUEST_TIME}
    # a known id, an unknown one, null, a fraction, one beyond int64, a negative one
    sent["user_id"] = np.array([full["user_id"][0], 10**9, np.nan, 1.5, 1e30, -7])
    before = (
        _count(metrics.FEATURE_LOOKUP_MISSES, "user"),
        _count(metrics.FEATURE_LOOKUP_HITS, "user"),
    )
    filled = fill(sent)
    after = (
        _count(metrics.FEATURE_LOOKUP_MISSES, "user"),
        _count(metrics.FEATURE_LOOKUP_HITS, "user"),
    )
    assert (after[0] - before[0], after[1] - before[1]) == (5, 1)
    assert filled["user_active_degree"].tolist()[1:] == [None] * 5
    assert filled["user_active_degree"][0] == full["user_active_degree"][0]
    assert np.isnan(filled["register_days"][1:]).all()
    # the model has a missing index for each of them: encoding works, rows answer
    tensors = encode_features(manifest(), filled)
    categorical = tensors["categorical"]
    position = manifest().inputs[0].columns.index("user_active_degree")
    assert categorical[1:, position].tolist() == [0] * 5


def test_text_ids_are_the_same_error_as_for_any_id_column() -> None:
    _, full = request_rows(3)
    sent = {name: full[name] for name in REQUEST_TIME}
    sent["video_id"] = np.array([1, "x" * 100_000, None], dtype=object)
    with pytest.raises(FeatureError) as info:
        fill(sent)
    assert info.value.column == "video_id" and info.value.row == 1
    assert len(str(info.value)) < 400  # the 100,000 characters are not echoed whole


def test_a_column_without_its_key_is_named() -> None:
    _, full = request_rows(3)
    sent = {name: full[name] for name in REQUEST_TIME if name != "video_id"}
    with pytest.raises(FeatureError) as info:
        fill(sent)
    assert info.value.column == "author_id" and "'video_id'" in str(info.value)


def test_no_rows_and_a_huge_batch() -> None:
    sent = {name: np.zeros(0, dtype=np.int64) for name in REQUEST_TIME}
    filled = fill(sent)
    assert all(len(v) == 0 for v in filled.values())
    n = 100_000
    rng = np.random.default_rng(0)
    sent = {name: rng.integers(0, 30_000, n) for name in REQUEST_TIME}
    started = time.perf_counter()
    filled = fill(sent)
    elapsed = time.perf_counter() - started
    assert all(len(v) == n for v in filled.values())
    print(f"ids-only lookup of {n} rows: {elapsed * 1000:.1f} ms")


class _Down:
    name = "redis"

    async def lookup(self, entity: EntitySchema, ids: np.ndarray, columns: object) -> None:
        raise FeatureStoreUnavailable("unavailable", "ConnectionError")

    async def close(self) -> None:
        return None


def test_a_failing_store_leaves_the_columns_missing_or_fails_when_required() -> None:
    _, full = request_rows(4)
    sent = {name: full[name] for name in REQUEST_TIME}
    errors = metrics.FEATURE_LOOKUP_ERRORS.labels("redis", "unavailable")
    before = float(errors._value.get())
    lookup = FeatureLookup(store().schema, _Down())  # type: ignore[arg-type]
    filled = fill(sent, lookup)
    assert float(errors._value.get()) - before == 2  # one per entity
    assert filled["user_active_degree"].tolist() == [None] * 4
    assert np.isnan(filled["duration_ms"]).all() and np.isnan(filled["freshness_days"]).all()
    encode_features(manifest(), filled)  # answerable: every column is a missing value
    required = FeatureLookup(store().schema, _Down(), required=True)  # type: ignore[arg-type]
    with pytest.raises(FeatureStoreUnavailable):
        fill(sent, required)


def test_lookup_share_of_a_256_row_request() -> None:
    """The embedded lookup against the rest of a 256-row request's work (decode, encode,
    onnxruntime, post-process), measured in this process: printed, not asserted."""
    import orjson

    from service.protocol.native.codec import decode_request
    from service.runtime.model import ModelRuntime, SessionConfig

    model = ModelRuntime.load(SHIPPED, SessionConfig(intra_op_threads=1))
    lookup = FeatureLookup(store().schema, store())
    features, _ = request_rows(256, 1000)
    full_body = orjson.dumps({"features": features})
    ids_body = orjson.dumps({"features": {k: features[k] for k in REQUEST_TIME}})
    optional = lookup.fillable(model.sources)
    loop = asyncio.new_event_loop()

    def best(call: object, number: int) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(number):
                call()  # type: ignore[operator]
            times.append((time.perf_counter() - started) / number)
        return min(times)

    def ids_only_lookup() -> None:
        decoded = decode_request(model, ids_body, 10_000, optional=optional)
        loop.run_until_complete(lookup.fill(model.sources, decoded.columns, decoded.n))

    def decode_ids() -> None:
        decode_request(model, ids_body, 10_000, optional=optional)

    def full_request() -> None:
        decoded = decode_request(model, full_body, 10_000)
        model.predict(decoded.columns, decoded.options)

    try:
        lookup_s = best(ids_only_lookup, 100) - best(decode_ids, 100)
        request_s = best(full_request, 20)
    finally:
        loop.close()
    share = lookup_s / (lookup_s + request_s)
    print(
        f"\n256 rows: lookup {lookup_s * 1e6:.0f} us, the rest of the request "
        f"{request_s * 1e6:.0f} us: lookup {100 * share:.1f} % of the request"
    )
    frame = pd.DataFrame({"lookup_us": [lookup_s * 1e6], "request_us": [request_s * 1e6]})
    assert (frame > 0).all().all()


def test_redis_rows_decode_from_their_bytes_and_refuse_a_short_one() -> None:
    """The Redis row layout by hand: two float64 per row, a missing id all NaN."""
    import struct

    from service.runtime.redis_store import decode_rows, encode_rows

    rows = [struct.pack("<2d", 1.5, -3.0), None, struct.pack("<2d", float("nan"), 7.0)]
    values, hit = decode_rows(rows, 2)
    assert hit.tolist() == [True, False, True]
    assert values[0].tolist() == [1.5, -3.0] and values[2, 1] == 7.0
    assert np.isnan(values[1]).all() and np.isnan(values[2, 0])
    assert encode_rows(np.array([[1.5, -3.0]])) == [rows[0]]
    assert decode_rows([], 2)[0].shape == (0, 2)
    with pytest.raises(ValueError, match="float64"):
        decode_rows([b"\x00" * 12], 2)
