"""Raw request columns -> model input tensors, driven only by the manifest.

This is the single implementation of the feature transforms: the exporter calls it on the
training days and the service on every request, so the two can never disagree. Everything is
vectorized over rows (vocabulary lookup is a binary search in the sorted vocabulary), because
a Python loop over rows would dominate the latency of a large batch.

Raw columns arrive as 1-D numpy arrays. Missing values are ``None`` (object arrays) or ``NaN``
(float arrays); what they become is the manifest's rule for that feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from service.manifest import (
    FIRST_VOCAB_INDEX,
    MISSING_INDEX,
    OOV_INDEX,
    CategoricalFeature,
    FeatureSpec,
    InputTensor,
    Manifest,
    NumericFeature,
)

Array = npt.NDArray[np.generic]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class FeatureError(ValueError):
    """A request column the manifest cannot turn into model input; names feature and row."""

    def __init__(self, feature: str, message: str, row: int | None = None) -> None:
        self.feature = feature
        self.row = row
        where = f"feature {feature!r}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {message}")


_is_text = np.frompyfunc(lambda v: isinstance(v, (str, bytes)), 1, 1)


def _is_none(arr: Array) -> BoolArray:
    """Elementwise ``v is None`` of an object array."""
    return np.asarray(arr == None, dtype=np.bool_)  # noqa: E711  (elementwise, not identity)


def _as_float(source: str, values: Array) -> tuple[FloatArray, BoolArray]:
    """Floats plus a missing mask; None/NaN/inf are missing, text is an error."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise FeatureError(source, f"expected a 1-D column, got shape {arr.shape}")
    if arr.dtype.kind in "biuf":
        out = arr.astype(np.float64)
    elif arr.dtype.kind == "O":
        text = np.asarray(_is_text(arr), dtype=np.bool_)
        if text.any():
            row = int(np.argmax(text))
            raise FeatureError(source, f"expected a number, got {arr[row]!r}", row)
        try:
            out = np.where(_is_none(arr), np.nan, arr).astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise FeatureError(source, f"expected numbers ({exc})") from exc
    else:
        raise FeatureError(source, f"expected numbers, got {arr.dtype} values")
    return out, ~np.isfinite(out)


def _as_strings(source: str, values: Array) -> tuple[npt.NDArray[np.str_], BoolArray]:
    """Strings plus a missing mask; integers are accepted and rendered as decimal text."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise FeatureError(source, f"expected a 1-D column, got shape {arr.shape}")
    if arr.dtype.kind == "O":
        # None and NaN (the only value unequal to itself) are missing.
        missing = _is_none(arr) | np.asarray(np.not_equal(arr, arr), dtype=np.bool_)
        return np.where(missing, "", arr).astype(np.str_), missing
    if arr.dtype.kind == "f":
        missing = ~np.isfinite(arr)
        safe = np.where(missing, 0.0, arr)
        integral = safe == np.round(safe)
        text = np.where(integral, safe.astype(np.int64).astype(np.str_), safe.astype(np.str_))
        return text.astype(np.str_), missing
    if arr.dtype.kind in "biuUS":
        return arr.astype(np.str_), np.zeros(arr.shape, dtype=bool)
    raise FeatureError(source, f"expected strings, got {arr.dtype} values")


def _days_from_civil(year: IntArray, month: IntArray, day: IntArray) -> IntArray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    result: IntArray = era * 146097 + doe - 719468
    return result


def weekday_from_yyyymmdd(dates: IntArray) -> IntArray:
    """Monday 0 .. Sunday 6 of yyyymmdd integers; -1 for an impossible date."""
    year, rest = np.divmod(dates, 10000)
    month, day = np.divmod(rest, 100)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_len = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
    safe_month = np.clip(month, 1, 12)
    days_in_month = month_len[safe_month - 1] + ((safe_month == 2) & leap)
    valid = (month >= 1) & (month <= 12) & (day >= 1) & (day <= days_in_month) & (year > 0)
    days = _days_from_civil(year, safe_month, np.clip(day, 1, 31))
    # 1970-01-01 was a Thursday (Monday-based weekday 3).
    weekday: IntArray = np.where(valid, (days + 3) % 7, -1).astype(np.int64)
    return weekday


def _lookup(vocabulary: Array, values: Array) -> IntArray:
    """Index of each value in the sorted vocabulary, OOV_INDEX when absent."""
    if vocabulary.size == 0:
        return np.full(values.shape, OOV_INDEX, dtype=np.int64)
    pos = np.searchsorted(vocabulary, values)
    clipped = np.minimum(pos, vocabulary.size - 1)
    found = vocabulary[clipped] == values
    return np.where(found, clipped + FIRST_VOCAB_INDEX, OOV_INDEX).astype(np.int64)


_ARRAY_CACHE: dict[int, tuple[CategoricalFeature, Array, Array]] = {}
_ARRAY_CACHE_SIZE = 4096


def _vocabulary_arrays(spec: CategoricalFeature) -> tuple[Array, Array]:
    """The spec's vocabulary and missing sentinels as numpy arrays, built once per spec.

    Turning a vocabulary of tens of thousands of ids from a list into an array costs
    milliseconds, far more than the lookup itself; manifests are immutable, so the arrays are
    kept per spec object (the entry holds the spec, so its id cannot be reused meanwhile).
    """
    hit = _ARRAY_CACHE.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1], hit[2]
    dtype = np.str_ if spec.dtype == "string" else np.int64
    vocab = np.asarray(spec.vocabulary, dtype=dtype)
    sentinels = np.asarray(spec.missing_values, dtype=dtype)
    if len(_ARRAY_CACHE) >= _ARRAY_CACHE_SIZE:
        _ARRAY_CACHE.clear()
    _ARRAY_CACHE[id(spec)] = (spec, vocab, sentinels)
    return vocab, sentinels


def _is_any_of(values: Array, sentinels: Array) -> BoolArray:
    """``np.isin`` for the handful of sentinels a manifest names, without its set-up cost."""
    if sentinels.size > 16:
        return np.isin(values, sentinels)
    out = values == sentinels[0]
    for sentinel in sentinels[1:]:
        out |= values == sentinel
    return np.asarray(out, dtype=np.bool_)


def encode_categorical(spec: CategoricalFeature, values: Array) -> IntArray:
    """Embedding indices of one categorical feature (see CategoricalFeature for the layout)."""
    vocab, sentinels = _vocabulary_arrays(spec)
    if spec.dtype == "string":
        text, missing = _as_strings(spec.source, values)
        if sentinels.size:
            missing |= _is_any_of(text, sentinels)
        index = _lookup(vocab, text)
        return np.where(missing, MISSING_INDEX, index).astype(np.int64)

    floats, missing = _as_float(spec.source, values)
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        ints = arr.astype(np.int64)
    else:
        safe = np.where(missing, 0.0, floats)
        non_integral = ~missing & (safe != np.round(safe))
        ints = safe.astype(np.int64)
    if spec.transform == "hour_of_day":
        hours = ints // 100
        ints = np.where((ints >= 0) & (hours <= 23) & (ints % 100 < 60), hours, -1)
    elif spec.transform == "weekday":
        ints = weekday_from_yyyymmdd(ints)
    if sentinels.size:
        missing |= _is_any_of(ints, sentinels) & ~missing
    index = _lookup(vocab, ints)
    if arr.dtype.kind not in "iu":
        index = np.where(non_integral, OOV_INDEX, index)
    return np.where(missing, MISSING_INDEX, index).astype(np.int64)


def encode_numeric(spec: NumericFeature, values: Array) -> tuple[FloatArray, FloatArray]:
    """Standardized values and the missing indicator (1.0 where the fill was used)."""
    x, missing = _as_float(spec.source, values)
    if spec.missing_values:
        missing |= np.isin(x, np.asarray(spec.missing_values, dtype=np.float64))
    safe = np.where(missing, 0.0, x)
    if spec.log1p:
        safe = np.log1p(np.maximum(safe, 0.0))
    z = (safe - spec.mean) / spec.std
    return np.where(missing, spec.fill, z), missing.astype(np.float64)


def _column_length(columns: Mapping[str, Array], sources: Sequence[str]) -> int:
    lengths = {name: len(np.asarray(columns[name])) for name in sources}
    distinct = set(lengths.values())
    if len(distinct) > 1:
        first = sources[0]
        for name, n in lengths.items():
            if n != lengths[first]:
                raise FeatureError(name, f"column has {n} rows but {first!r} has {lengths[first]}")
    return distinct.pop() if distinct else 0


def required_columns(features: Sequence[FeatureSpec]) -> list[str]:
    """Raw request columns a feature list reads, in first-use order."""
    return list(dict.fromkeys(f.source for f in features))


def encode_columns(
    features: Sequence[FeatureSpec], inputs: Sequence[InputTensor], columns: Mapping[str, Array]
) -> dict[str, Array]:
    """All model inputs for a batch of raw rows, keyed by ONNX input name.

    Raises FeatureError naming the first missing or malformed column. Columns the model does
    not use are ignored, so a client may send whole joined log rows.
    """
    sources = required_columns(features)
    for source in sources:
        if source not in columns:
            raise FeatureError(source, "required column is missing")
    n = _column_length(columns, sources)
    produced: dict[str, Array] = {}
    for spec in features:
        if isinstance(spec, CategoricalFeature):
            produced[spec.name] = encode_categorical(spec, columns[spec.source])
        else:
            value, indicator = encode_numeric(spec, columns[spec.source])
            produced[spec.name] = value
            if spec.missing_indicator:
                produced[spec.indicator_name] = indicator
    return {tensor.name: _stack(tensor, produced, n) for tensor in inputs}


def encode_features(manifest: Manifest, columns: Mapping[str, Array]) -> dict[str, Array]:
    """Model inputs of a batch as the manifest prescribes (see :func:`encode_columns`)."""
    return encode_columns(manifest.features, manifest.inputs, columns)


def _stack(tensor: InputTensor, produced: Mapping[str, Array], n: int) -> Array:
    dtype = np.int64 if tensor.dtype == "int64" else np.float32
    out = np.empty((n, len(tensor.columns)), dtype=dtype)
    for j, column in enumerate(tensor.columns):
        out[:, j] = produced[column]
    return out
