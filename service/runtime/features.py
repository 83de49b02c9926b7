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
from itertools import repeat

import numpy as np
import numpy.typing as npt

from service.errors import FeatureError
from service.manifest import (
    FIRST_VOCAB_INDEX,
    MISSING_INDEX,
    OOV_INDEX,
    CategoricalFeature,
    FeatureSpec,
    InputTensor,
    LookupFeature,
    Manifest,
    NumericFeature,
    derived_once,
)
from service.runtime.lookup import LookupTables, Table, stored_column, stored_found

Array = npt.NDArray[np.generic]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


MAX_STRING_CHARS = 256
"""Longest text value a feature column may hold. Vocabularies hold short labels (the longest
shipped is a few dozen characters); the bound keeps a request's memory in proportion to its
body, as text arrays are as wide as their longest value."""


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
            shown = repr(arr[row])
            if len(shown) > 80:  # never echo a huge value whole
                shown = f"{shown[:60]}... ({len(shown)} characters)"
            raise FeatureError(source, f"expected a number, got {shown}", row)
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
    index: IntArray = clipped.astype(np.int64, copy=False) + FIRST_VOCAB_INDEX
    index[vocabulary[clipped] != values] = OOV_INDEX
    return index


_ARRAY_CACHE: dict[int, tuple[object, tuple[Array, Array]]] = {}


def _vocabulary_arrays(spec: CategoricalFeature) -> tuple[Array, Array]:
    """The spec's vocabulary and missing sentinels as numpy arrays, built once per spec.

    Turning a vocabulary of tens of thousands of ids from a list into an array costs
    milliseconds, far more than the lookup itself.
    """

    def build() -> tuple[Array, Array]:
        dtype = np.str_ if spec.dtype == "string" else np.int64
        vocab = np.asarray(spec.vocabulary, dtype=dtype)
        return vocab, np.asarray(spec.missing_values, dtype=dtype)

    return derived_once(_ARRAY_CACHE, spec, build)


_NUMERIC_CACHE: dict[int, tuple[object, Array]] = {}


def _numeric_sentinels(spec: NumericFeature) -> Array:
    """The spec's missing-value sentinels as a float array, built once per spec."""
    return derived_once(
        _NUMERIC_CACHE, spec, lambda: np.asarray(spec.missing_values, dtype=np.float64)
    )


def _is_any_of(values: Array, sentinels: Array) -> BoolArray:
    """``np.isin`` for the handful of sentinels a manifest names, without its set-up cost."""
    if sentinels.size > 16:
        return np.isin(values, sentinels)
    out = values == sentinels[0]
    for sentinel in sentinels[1:]:
        out |= values == sentinel
    return np.asarray(out, dtype=np.bool_)


_TEXT_CACHE: dict[int, tuple[object, dict[object, int]]] = {}


def _text_table(spec: CategoricalFeature) -> dict[object, int]:
    """Text value -> embedding index of a string feature, built once per spec.

    Holds every vocabulary entry (its first position, as the sorted search finds it), the
    missing sentinels and None (both the missing index, which wins over the vocabulary).
    """

    def build() -> dict[object, int]:
        vocab, sentinels = _vocabulary_arrays(spec)
        table: dict[object, int] = {}
        for i, value in enumerate(vocab.tolist()):
            table.setdefault(value, i + FIRST_VOCAB_INDEX)
        for value in [*sentinels.tolist(), None]:
            table[value] = MISSING_INDEX
        return table

    return derived_once(_TEXT_CACHE, spec, build)


def _encode_text(spec: CategoricalFeature, values: Array) -> IntArray | None:
    """Indices of a text column of only strings and None, by hash lookups; else None.

    A dictionary lookup per value (C-level iteration) costs a fraction of widening the
    column to a fixed-width text array and binary-searching it; other value types (numbers
    written as text, NaN) take the general path.
    """
    arr = np.asarray(values)
    if arr.dtype.kind != "O" or arr.ndim != 1:
        return None
    items = arr.tolist()
    if not set(map(type, items)) <= {str, type(None)}:
        return None
    table = _text_table(spec)
    return np.fromiter(map(table.get, items, repeat(OOV_INDEX)), dtype=np.int64, count=len(items))


def encode_categorical(spec: CategoricalFeature, values: Array) -> IntArray:
    """Embedding indices of one categorical feature (see CategoricalFeature for the layout)."""
    vocab, sentinels = _vocabulary_arrays(spec)
    if spec.dtype == "string":
        fast = _encode_text(spec, values)
        if fast is not None:
            return fast
        text, missing = _as_strings(spec.source, values)
        if sentinels.size:
            missing |= _is_any_of(text, sentinels)
        index = _lookup(vocab, text)
        return np.where(missing, MISSING_INDEX, index).astype(np.int64)

    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return _encode_integers(spec, arr, sentinels, vocab)
    floats, missing = _as_float(spec.source, values)
    safe = np.where(missing, 0.0, floats)
    non_integral = ~missing & (safe != np.round(safe))
    ints = _integer_transform(spec, safe.astype(np.int64))
    if sentinels.size:  # a fraction is unknown, not the sentinel it truncates to
        missing |= _is_any_of(ints, sentinels) & ~missing & ~non_integral
    index = np.where(non_integral, OOV_INDEX, _lookup(vocab, ints))
    return np.where(missing, MISSING_INDEX, index).astype(np.int64)


def _integer_transform(spec: CategoricalFeature, ints: IntArray) -> IntArray:
    if spec.transform == "hour_of_day":
        hours = ints // 100
        return np.where((ints >= 0) & (hours <= 23) & (ints % 100 < 60), hours, -1)
    if spec.transform == "weekday":
        return weekday_from_yyyymmdd(ints)
    return ints


def _encode_integers(
    spec: CategoricalFeature, arr: Array, sentinels: Array, vocab: Array
) -> IntArray:
    """The integer-column path of :func:`encode_categorical`: nothing can be missing but a
    sentinel, so no float round trip and no masks beyond that one (a few numpy calls per
    column: the fixed cost of a small request is the number of calls, not the rows)."""
    if arr.ndim != 1:
        raise FeatureError(spec.source, f"expected a 1-D column, got shape {arr.shape}")
    ints = _integer_transform(spec, arr.astype(np.int64, copy=False))
    index = _lookup(vocab, ints)
    if sentinels.size:
        index[_is_any_of(ints, sentinels)] = MISSING_INDEX
    return index


def encode_numeric(spec: NumericFeature, values: Array) -> tuple[FloatArray, FloatArray]:
    """Standardized values and the missing indicator (1.0 where the fill was used)."""
    x, missing = _as_float(spec.source, values)
    if spec.missing_values:
        missing |= _is_any_of(x, _numeric_sentinels(spec))
    safe = np.where(missing, 0.0, x)
    if spec.log1p:
        safe = np.log1p(np.maximum(safe, 0.0))
    z = (safe - spec.mean) / spec.std
    return np.where(missing, spec.fill, z), missing.astype(np.float64)


_ID_LIMIT = float(1 << 62)
"""Float ids at or beyond this magnitude cannot be an int64 table id: unseen, never cast."""


def known_ids(source: str, values: Array) -> tuple[IntArray, BoolArray]:
    """The int64 id of each row and whether it can be one (False: a missing or impossible id).

    Ids are read as a categorical id column is: integers as they are; floats (NaN or inf is
    missing, a fraction is no id); an object column of numbers and None; text of any kind
    is a FeatureError naming the column and row, exactly as for the vocabulary features.
    Every id-keyed table (the history statistics, the feature store's entities, embedded or
    in Redis) reads its key column through here.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise FeatureError(source, f"expected a 1-D column, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) >= 1 << 63:
            floats = arr.astype(np.float64)
            known = floats < _ID_LIMIT
            return np.where(known, arr, 0).astype(np.int64), known
        return arr.astype(np.int64, copy=False), np.ones(arr.shape, dtype=np.bool_)
    floats, missing = _as_float(source, arr)
    safe = np.where(missing, 0.0, floats)
    known = ~missing & (safe == np.round(safe)) & (np.abs(safe) < _ID_LIMIT)
    return np.where(known, safe, 0.0).astype(np.int64), known


def find_rows(sorted_ids: IntArray, source: str, values: Array) -> IntArray:
    """Row of each id in ``sorted_ids`` (binary search); -1 for an unseen or missing id."""
    ids, known = known_ids(source, values)
    if sorted_ids.size == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    found = known & (sorted_ids[pos] == ids)
    rows: IntArray = np.where(found, pos, -1).astype(np.int64, copy=False)
    return rows


def table_rows(table: Table, source: str, values: Array) -> IntArray:
    """Row of each id in a history table's sorted ids; -1 for an unseen or missing id
    (:func:`find_rows`, the search every id-keyed table shares)."""
    return find_rows(table.ids, source, values)


def lookup_values(table: Table, statistic: str, rows: IntArray) -> FloatArray:
    """The raw statistic of each row (:func:`table_rows`); the table's default where unseen."""
    default = table.defaults[statistic]
    if table.ids.size == 0:
        return np.full(rows.shape, default, dtype=np.float64)
    column = table.columns[statistic]
    values: FloatArray = np.where(rows < 0, default, column[np.maximum(rows, 0)]).astype(np.float64)
    return values


def encode_lookup(
    spec: LookupFeature, table: Table, rows: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Standardized statistic of each row's id and the unseen indicator (see LookupFeature).

    ``rows`` come from :func:`table_rows`; the table's own default fills the unseen ids (the
    frozen tables' default is the manifest's; each offline day's is that day's global value).
    """
    return standardize_lookup(spec, lookup_values(table, spec.statistic, rows), rows < 0)


def standardize_lookup(
    spec: LookupFeature, raw: FloatArray, unseen: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """A statistic's raw values (the default already where ``unseen``) as the model reads
    them: see :func:`encode_lookup`; also the path of values a store read."""
    missing = ~np.isfinite(raw)
    safe = np.where(missing, 0.0, raw)
    if spec.log1p:
        safe = np.log1p(np.maximum(safe, 0.0))
    z = np.where(missing, spec.fill, (safe - spec.mean) / spec.std)
    return z, unseen.astype(np.float64)


_KEY_SPAN = 1 << 40
"""Width of one feature's slice of the joint key space (see :class:`_JointLookup`)."""

_KEY_HALF = _KEY_SPAN >> 1


class _JointLookup:
    """One binary search for every plain integer categorical feature of a manifest at once.

    A small request's encoding time is the count of numpy calls, not its rows: one lookup
    per feature is some eight calls, times dozens of features. Here feature ``j``'s value
    ``v`` becomes the key ``j * 2**40 + (v + 2**39)``; the features' sorted vocabularies,
    keyed so, concatenate into one sorted array, and all features of all rows are looked up
    with one ``searchsorted``. A value outside ``[-2**39, 2**39)`` cannot be in a
    vocabulary (checked when the lookup is built) and is simply unknown. The indices are
    exactly those of :func:`encode_categorical`.
    """

    def __init__(self, specs: list[CategoricalFeature]) -> None:
        self.specs = specs
        self.sources = [spec.source for spec in specs]
        keys: list[IntArray] = []
        sentinel_keys: list[IntArray] = []
        offsets: list[int] = []
        size = 0
        for j, spec in enumerate(specs):
            vocab, sentinels = _vocabulary_arrays(spec)
            offsets.append(size)
            size += vocab.size
            keys.append(vocab.astype(np.int64) + (j * _KEY_SPAN + _KEY_HALF))
            sentinel_keys.append(sentinels.astype(np.int64) + (j * _KEY_SPAN + _KEY_HALF))
        self.keys = np.concatenate(keys) if keys else np.empty(0, dtype=np.int64)
        self.sentinel_keys = np.unique(np.concatenate(sentinel_keys)) if keys else self.keys
        self.offsets = np.asarray(offsets, dtype=np.int64)[:, None] - FIRST_VOCAB_INDEX
        self.prefix = (np.arange(len(specs), dtype=np.int64) * _KEY_SPAN + _KEY_HALF)[:, None]

    @staticmethod
    def fits(spec: CategoricalFeature) -> bool:
        """Whether the feature can join: integer ids, no transform, values inside the span."""
        if spec.dtype == "string" or spec.transform != "identity":
            return False
        values = [*spec.vocabulary, *spec.missing_values]
        return all(isinstance(v, int) and -_KEY_HALF <= v < _KEY_HALF for v in values)

    def encode(self, columns: Mapping[str, Array]) -> dict[str, IntArray] | None:
        """Indices per feature name; None when a column is neither 1-D integers nor floats.

        Float columns follow :func:`encode_categorical`: NaN/inf is missing, a fraction is
        unknown; they are converted together, as one matrix, like the integer ones.
        """
        arrays = [np.asarray(columns[source]) for source in self.sources]
        if not all(a.ndim == 1 and a.dtype.kind in "iuf" for a in arrays):
            return None
        k, n = len(arrays), len(arrays[0])
        floats = [j for j, a in enumerate(arrays) if a.dtype.kind == "f"]
        ints = [j for j, a in enumerate(arrays) if a.dtype.kind != "f"]
        values = np.empty((k, n), dtype=np.int64)
        missing = np.zeros((k, n), dtype=np.bool_)
        fraction = None
        if ints:
            values[ints] = np.array([arrays[j] for j in ints], dtype=np.int64)
        if floats:
            x = np.array([arrays[j] for j in floats], dtype=np.float64)
            absent = ~np.isfinite(x)
            safe = np.where(absent, 0.0, x)
            values[floats] = safe.astype(np.int64)
            missing[floats] = absent
            fraction = np.zeros((k, n), dtype=np.bool_)
            fraction[floats] = ~absent & (safe != np.round(safe))
        inside = (values >= -_KEY_HALF) & (values < _KEY_HALF)
        keys = np.where(inside, values, 0) + self.prefix
        index = self._index(keys, inside)
        if fraction is not None:
            index[fraction] = OOV_INDEX
        if self.sentinel_keys.size:
            pos = np.minimum(np.searchsorted(self.sentinel_keys, keys), self.sentinel_keys.size - 1)
            sentinel = (self.sentinel_keys[pos] == keys) & inside
            missing |= sentinel if fraction is None else sentinel & ~fraction
        index[missing] = MISSING_INDEX
        return {spec.name: index[j] for j, spec in enumerate(self.specs)}

    def _index(self, keys: IntArray, inside: BoolArray) -> IntArray:
        if self.keys.size == 0:
            return np.full(keys.shape, OOV_INDEX, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        index: IntArray = pos - self.offsets
        index[(self.keys[pos] != keys) | ~inside] = OOV_INDEX
        return index


_JOINT_CACHE: dict[int, tuple[object, _JointLookup]] = {}


def _joint_lookup(features: Sequence[FeatureSpec]) -> _JointLookup:
    """The joint lookup of a feature list, built once per list."""
    return derived_once(
        _JOINT_CACHE,
        features,
        lambda: _JointLookup(
            [f for f in features if isinstance(f, CategoricalFeature) and _JointLookup.fits(f)]
        ),
    )


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
    features: Sequence[FeatureSpec],
    inputs: Sequence[InputTensor],
    columns: Mapping[str, Array],
    lookups: LookupTables | None = None,
) -> dict[str, Array]:
    """All model inputs for a batch of raw rows, keyed by ONNX input name.

    Raises FeatureError naming the first missing or malformed column. Columns the model does
    not use are ignored, so a client may send whole joined log rows. ``lookups`` holds the
    tables the lookup features read (required when there are any); each table's id search
    is done once per batch, whatever the number of its statistics.
    """
    sources = required_columns(features)
    for source in sources:
        if source not in columns:
            raise FeatureError(source, "required column is missing")
    n = _column_length(columns, sources)
    joint = _joint_lookup(features)
    produced: dict[str, Array] = {}
    if len(joint.specs) > 1:
        produced.update(joint.encode(columns) or {})
    rows: dict[tuple[str, str], IntArray] = {}
    for spec in features:
        if spec.name in produced:
            continue
        if isinstance(spec, CategoricalFeature):
            produced[spec.name] = encode_categorical(spec, columns[spec.source])
        elif isinstance(spec, LookupFeature):
            if lookups is None:
                raise ValueError(f"feature {spec.name!r} reads lookup tables; none were given")
            stored = stored_column(spec.table, spec.source, spec.statistic)
            if stored in columns:  # read from a store for this request (Redis)
                found = np.asarray(columns[stored_found(spec.table, spec.source)], dtype=bool)
                raw = np.where(found, columns[stored], spec.default).astype(np.float64)
                value, unseen = standardize_lookup(spec, raw, ~found)
            else:
                table = lookups.table(spec.table)
                key = (spec.table, spec.source)
                if key not in rows:
                    rows[key] = table_rows(table, spec.source, columns[spec.source])
                value, unseen = encode_lookup(spec, table, rows[key])
            produced[spec.name] = value
            if spec.unseen_indicator:
                produced[spec.indicator_name] = unseen
        else:
            value, indicator = encode_numeric(spec, columns[spec.source])
            produced[spec.name] = value
            if spec.missing_indicator:
                produced[spec.indicator_name] = indicator
    return {tensor.name: _stack(tensor, produced, n) for tensor in inputs}


def encode_features(
    manifest: Manifest, columns: Mapping[str, Array], lookups: LookupTables | None = None
) -> dict[str, Array]:
    """Model inputs of a batch as the manifest prescribes (see :func:`encode_columns`)."""
    return encode_columns(manifest.features, manifest.inputs, columns, lookups)


def _stack(tensor: InputTensor, produced: Mapping[str, Array], n: int) -> Array:
    dtype = np.int64 if tensor.dtype == "int64" else np.float32
    out = np.empty((n, len(tensor.columns)), dtype=dtype)
    for j, column in enumerate(tensor.columns):
        out[:, j] = produced[column]
    return out
