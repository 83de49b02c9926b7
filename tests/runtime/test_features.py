"""The shared feature encoder: vocabulary lookup, derived features, missing values, errors."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from service.errors import FeatureError
from service.manifest import (
    FIRST_VOCAB_INDEX,
    MISSING_INDEX,
    OOV_INDEX,
    CategoricalFeature,
    InputTensor,
    NumericFeature,
)
from service.runtime.features import (
    encode_categorical,
    encode_columns,
    encode_numeric,
    weekday_from_yyyymmdd,
)


def _cat(vocab: list[int] | list[str], dtype: str = "int64", **kw: object) -> CategoricalFeature:
    return CategoricalFeature.model_validate(
        {
            "name": kw.pop("name", "f"),
            "source": kw.pop("source", "f"),
            "dtype": dtype,
            "vocabulary": vocab,
            "min_count": 1,
            "cardinality": FIRST_VOCAB_INDEX + len(vocab),
            **kw,
        }
    )


def test_int_vocabulary_lookup_matches_a_dict() -> None:
    rng = np.random.default_rng(0)
    vocab = sorted(rng.choice(10_000, 500, replace=False).tolist())
    spec = _cat(vocab)
    values = rng.integers(-5, 10_005, 20_000)
    reference = {v: FIRST_VOCAB_INDEX + i for i, v in enumerate(vocab)}
    want = np.array([reference.get(int(v), OOV_INDEX) for v in values])
    np.testing.assert_array_equal(encode_categorical(spec, values), want)


def test_missing_unknown_and_sentinel_int() -> None:
    spec = _cat([3, 7, 9], missing_values=[-124])
    values = np.array([7, None, 4, -124, 9, 3.0, float("nan"), 2.5], dtype=object)
    got = encode_categorical(spec, values)
    want = [3, MISSING_INDEX, OOV_INDEX, MISSING_INDEX, 4, 2, MISSING_INDEX, OOV_INDEX]
    np.testing.assert_array_equal(got, want)


def test_float_column_with_nan_as_int_category() -> None:
    spec = _cat([0, 1])
    got = encode_categorical(spec, np.array([1.0, np.nan, 0.0, 5.0]))
    np.testing.assert_array_equal(got, [3, MISSING_INDEX, 2, OOV_INDEX])


def test_string_vocabulary_accepts_ints_and_none() -> None:
    spec = _cat(["12", "39", "unknown"], dtype="string")
    values = np.array(["39", None, "unknown", 12, "nope", float("nan")], dtype=object)
    got = encode_categorical(spec, values)
    np.testing.assert_array_equal(got, [3, MISSING_INDEX, 4, 2, OOV_INDEX, MISSING_INDEX])
    np.testing.assert_array_equal(encode_categorical(spec, np.array([39, 12])), [3, 2])


def test_empty_vocabulary_maps_everything_to_oov() -> None:
    spec = _cat([])
    np.testing.assert_array_equal(encode_categorical(spec, np.array([1, 2])), [1, 1])


def test_hour_of_day() -> None:
    spec = _cat(list(range(24)), transform="hour_of_day", source="hourmin")
    got = encode_categorical(spec, np.array([0, 59, 1230, 2359, 2400, 1275, -5]))
    want = [2, 2, 2 + 12, 2 + 23, OOV_INDEX, OOV_INDEX, OOV_INDEX]
    np.testing.assert_array_equal(got, want)


def test_weekday_matches_datetime() -> None:
    start = dt.date(1999, 12, 1)
    days = [start + dt.timedelta(days=i) for i in range(0, 12_000, 7)] + [
        dt.date(2022, 5, 4),
        dt.date(2000, 2, 29),
        dt.date(2100, 3, 1),
    ]
    ints = np.array([d.year * 10000 + d.month * 100 + d.day for d in days])
    np.testing.assert_array_equal(weekday_from_yyyymmdd(ints), [d.weekday() for d in days])
    bad = np.array([20220230, 20221301, 20220000, 21000229])
    np.testing.assert_array_equal(weekday_from_yyyymmdd(bad), [-1, -1, -1, -1])


def test_numeric_pipeline_by_hand() -> None:
    spec = NumericFeature(
        name="duration_ms",
        source="duration_ms",
        missing_values=[0.0],
        log1p=True,
        mean=10.0,
        std=2.0,
        fill=0.0,
        missing_indicator=True,
    )
    values = np.array([1000.0, 0.0, None, -3.0, float("inf"), 99_000], dtype=object)
    z, missing = encode_numeric(spec, values)
    want = [
        (np.log1p(1000.0) - 10) / 2,
        0.0,
        0.0,
        (0.0 - 10) / 2,  # negatives are clipped to 0 before log1p
        0.0,
        (np.log1p(99_000.0) - 10) / 2,
    ]
    np.testing.assert_allclose(z, want, rtol=1e-12)
    np.testing.assert_array_equal(missing, [0, 1, 1, 0, 1, 0])


def test_encode_columns_layout_and_dtypes() -> None:
    a = _cat([1, 2], name="a", source="a")
    b = _cat(["x"], dtype="string", name="b", source="b")
    d = NumericFeature(name="d", source="d", mean=1.0, std=1.0, missing_indicator=True)
    inputs = [
        InputTensor(name="categorical", dtype="int64", columns=["b", "a"]),
        InputTensor(name="numeric", dtype="float32", columns=["d__missing", "d"]),
    ]
    cols = {
        "a": np.array([2, 5]),
        "b": np.array(["x", None], dtype=object),
        "d": np.array([3.0, np.nan]),
        "ignored": np.array([0, 0]),
    }
    out = encode_columns([a, b, d], inputs, cols)
    assert out["categorical"].dtype == np.int64
    assert out["numeric"].dtype == np.float32
    np.testing.assert_array_equal(out["categorical"], [[2, 3], [MISSING_INDEX, OOV_INDEX]])
    np.testing.assert_array_equal(out["numeric"], [[0.0, 2.0], [1.0, 0.0]])


def test_errors_name_the_feature() -> None:
    a = _cat([1], name="a", source="a")
    d = NumericFeature(name="d", source="d", mean=0.0, std=1.0)
    inputs = [
        InputTensor(name="categorical", dtype="int64", columns=["a"]),
        InputTensor(name="numeric", dtype="float32", columns=["d"]),
    ]
    with pytest.raises(FeatureError, match=r"'d'.*missing"):
        encode_columns([a, d], inputs, {"a": np.array([1])})
    with pytest.raises(FeatureError, match=r"'d'.*rows"):
        encode_columns([a, d], inputs, {"a": np.array([1]), "d": np.array([1.0, 2.0])})
    with pytest.raises(FeatureError, match="'d', row 1"):
        encode_columns(
            [a, d], inputs, {"a": np.array([1, 1]), "d": np.array([1.0, "x"], dtype=object)}
        )


def test_large_batch_is_fast() -> None:
    """Vectorized: 200k rows through a 10k-entry vocabulary well under a second."""
    import time

    spec = _cat(list(range(0, 20_000, 2)))
    values = np.arange(200_000) % 25_000
    start = time.perf_counter()
    got = encode_categorical(spec, values)
    assert time.perf_counter() - start < 1.0
    expect = np.where((values < 20_000) & (values % 2 == 0), values // 2 + 2, OOV_INDEX)
    np.testing.assert_array_equal(got, expect)


def _dict_index(vocab: list[int], sentinels: list[int], value: float) -> int:
    """The index layout computed by hand for one raw value (the independent reference)."""
    if value != value or value in (np.inf, -np.inf) or value in sentinels:
        return MISSING_INDEX
    if value != int(value):
        return OOV_INDEX
    where = {v: FIRST_VOCAB_INDEX + i for i, v in enumerate(vocab)}
    return where.get(int(value), OOV_INDEX)


def test_all_integer_features_looked_up_at_once_match_a_dict() -> None:
    """Many integer features share one binary search; each must still get its own indices."""
    span = 2**39  # the joint key space's edge: values beyond it are simply unknown
    specs = [
        _cat([-7, 0, 3, 10**6], name="a", source="a", missing_values=[-124]),
        _cat([1, 2], name="b", source="b"),
        _cat([], name="c", source="c"),
        _cat([-span, span - 1], name="d", source="d", missing_values=[0]),
        _cat([5, 6, 7], name="e", source="e", missing_values=[-1, 9]),
    ]
    rng = np.random.default_rng(7)
    n = 300
    pool = [-124, -7, 0, 1, 2, 3, 5, 6, 7, 9, -1, 10**6, span - 1, span, -span, -span - 1]
    columns: dict[str, np.ndarray] = {
        "a": rng.choice(pool, n),
        "b": rng.choice(pool, n).astype(np.int32),
        "c": rng.choice(pool, n),
        "d": rng.choice(pool, n).astype(np.float64),
        "e": np.where(rng.random(n) < 0.2, np.nan, rng.choice(pool, n) + (rng.random(n) < 0.2) / 2),
    }
    tensor = InputTensor(name="categorical", dtype="int64", columns=[s.name for s in specs])
    got = encode_columns(specs, [tensor], columns)["categorical"]
    for j, spec in enumerate(specs):
        vocab = [int(v) for v in spec.vocabulary]
        sentinels = [int(v) for v in spec.missing_values]
        want = [_dict_index(vocab, sentinels, float(v)) for v in columns[spec.source]]
        assert got[:, j].tolist() == want, spec.name
        assert got[:, j].tolist() == encode_categorical(spec, columns[spec.source]).tolist()
