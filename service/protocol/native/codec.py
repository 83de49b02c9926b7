"""The native JSON codec: request bytes -> raw columns and options, Prediction -> bytes.

No HTTP here: a body is parsed by orjson (which refuses ``NaN``/``Infinity`` literals, as
JSON does) and turned into one numpy array per feature column without any Python loop over
rows for the columnar form; the row form is transposed column by column with C-level
iteration. The answer's numpy arrays go straight into orjson, with no Python object per row.
Faults raise :mod:`service.errors` types naming the field and the row; the endpoint picks
the status.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from service.distributions.curve import DENSITY_NOTES
from service.errors import InvalidInput, MalformedBody, TextTooLong, TooLarge
from service.runtime.features import MAX_STRING_CHARS
from service.runtime.model import ModelRuntime
from service.runtime.prediction import Prediction, PredictOptions

ALLOWED_KEYS = frozenset(
    {
        "features",
        "instances",
        "quantiles",
        "intervals",
        "quick_skip_threshold_s",
        "return_params",
        "curve",
    }
)

CURVE_KEYS = frozenset({"points", "max_s"})
DEFAULT_CURVE_POINTS = 200
DEFAULT_CURVE_MAX_S = 600.0

JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

#: Python types a JSON column may hold, per what the manifest reads from it
ALLOWED_TYPES: dict[str, frozenset[type]] = {
    "number": frozenset({int, float, bool, type(None)}),
    "string": frozenset({str, int, float, bool, type(None)}),
}


# --------------------------------------------------------------------------- request body


def parse_json(body: bytes) -> Any:
    """orjson parse; NaN/Infinity literals and trailing garbage are malformed JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"body: malformed JSON: {exc}", field="body") from None


# --------------------------------------------------------------------------- columns


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _first_row(values: list[Any], predicate: Any) -> int | None:
    """Index of the first value matching ``predicate``; only ever called on an error path."""
    return next((i for i, v in enumerate(values) if predicate(v)), None)


def column_array(field: str, values: Any, kind: str) -> np.ndarray:
    """One JSON column as a 1-D numpy array, or an error naming the row with a wrong value.

    ``kind`` is "number" or "string": what the manifest's features read from the column. A
    number column must not hold text; a string column accepts integers as their decimal text.
    The element types are collected first, in one C-level pass, so the array is built with
    its final dtype: a string column stays an array of references (a fixed-width text array
    would size every row by the longest value), and each value is held to
    ``MAX_STRING_CHARS``.
    """
    if not isinstance(values, list):
        raise InvalidInput.at(field, f"expected a list of values, got {type(values).__name__}")
    types = set(map(type, values))
    wrong = types - ALLOWED_TYPES[kind]
    if wrong:
        row = _first_row(values, lambda v: type(v) in wrong)
        shown = values[row] if row is not None else None
        if isinstance(shown, (list, dict)):
            raise InvalidInput.at(field, "expected a scalar or null in every row", row)
        want = "a number or null" if kind == "number" else "a string, a number or null"
        raise InvalidInput.at(field, f"expected {want}, got {_clip(shown)}", row)
    if kind == "string":
        if str in types:
            check_string_lengths(field, values)
        return np.array(values, dtype=object)
    if types <= {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            pass  # ids beyond int64: as floats they are simply unknown to any vocabulary
    try:  # null -> NaN, the missing-value marker of a float column
        return np.array(values, dtype=np.float64)
    except OverflowError:
        row = _first_row(values, lambda v: abs(v or 0) > 1e308)
        raise InvalidInput.at(field, "number out of range", row) from None


def _clip(value: Any) -> str:
    """A value for an error message, cut short: the message must not echo a huge body."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def check_string_lengths(field: str, values: list[Any]) -> None:
    """An error naming the first text value longer than ``MAX_STRING_CHARS``."""
    longest = max(map(len, filter(str.__instancecheck__, values)), default=0)
    if longest > MAX_STRING_CHARS:
        row = _first_row(values, lambda v: isinstance(v, str) and len(v) > MAX_STRING_CHARS)
        raise TextTooLong.at(
            field,
            f"a text value of {longest} characters exceeds the limit of {MAX_STRING_CHARS}",
            row,
        )


def _check_row_limit(prefix: str, n: int, max_rows: int) -> None:
    """413 for a request over the row limit, whichever form it came in."""
    if n > max_rows:
        raise TooLarge(
            f"{prefix}: {n} rows exceed the limit of {max_rows} per request", field=prefix
        )


def columnar(
    model: ModelRuntime,
    features: Any,
    max_rows: int,
    prefix: str = "features",
    optional: frozenset[str] = frozenset(),
) -> tuple[dict[str, np.ndarray], int]:
    """Arrays of the columns the model reads from a ``{"name": [...], ...}`` object.

    A column of ``optional`` (one the feature store fills by id) may be left out.
    """
    if not isinstance(features, dict):
        raise InvalidInput.at(prefix, "expected an object of feature columns")
    first: str | None = None
    n = 0
    for source in model.sources:
        if source not in features:
            if source in optional:
                continue
            raise InvalidInput.at(f"{prefix}.{source}", "required feature column is missing")
        values = features[source]
        if not isinstance(values, list):
            got = type(values).__name__
            raise InvalidInput.at(f"{prefix}.{source}", f"expected a list of values, got {got}")
        if first is None:
            first, n = source, len(values)
            _check_row_limit(prefix, n, max_rows)
        elif len(values) != n:
            raise InvalidInput.at(
                f"{prefix}.{source}",
                f"column has {len(values)} rows but {first!r} has {n}",
                min(n, len(values)),
            )
    columns = {
        source: column_array(f"{prefix}.{source}", features[source], kind)
        for source, kind in model.source_kinds.items()
        if source in features
    }
    return columns, n


def rows_to_columns(
    model: ModelRuntime,
    instances: Any,
    max_rows: int,
    prefix: str = "instances",
    optional: frozenset[str] = frozenset(),
) -> tuple[dict[str, np.ndarray], int]:
    """Arrays of the model's columns from a ``[{"name": value, ...}, ...]`` list of rows.

    A feature of ``optional`` (one the feature store fills by id) may be left out of every
    row; one row without a feature the others hold is an error.
    """
    if not isinstance(instances, list):
        raise InvalidInput.at(prefix, "expected a list of row objects")
    n = len(instances)
    _check_row_limit(prefix, n, max_rows)
    row = _first_row(instances, lambda v: not isinstance(v, dict)) if n else None
    if row is not None:
        raise InvalidInput.at(prefix, "expected an object of feature values", row)
    columns: dict[str, np.ndarray] = {}
    for source, kind in model.source_kinds.items():
        try:
            values = list(map(itemgetter(source), instances))
        except KeyError:
            if source in optional and not any(source in v for v in instances):
                continue
            missing = _first_row(instances, lambda v, s=source: s not in v)
            raise InvalidInput.at(
                f"{prefix}.{source}", "required feature is missing", missing
            ) from None
        columns[source] = column_array(f"{prefix}.{source}", values, kind)
    return columns, n


# --------------------------------------------------------------------------- options


def _number(field: str, value: Any) -> float:
    if not _is_number(value):
        raise InvalidInput.at(field, f"expected a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidInput.at(field, "expected a finite number")
    return result


def options_from(doc: Mapping[str, Any]) -> PredictOptions:
    """Validated PredictOptions from the optional request fields."""
    quantiles = doc.get("quantiles")
    levels: list[float] | None = None
    if quantiles is not None:
        if not isinstance(quantiles, list):
            raise InvalidInput.at("quantiles", "expected a list of levels in (0, 1)")
        levels = [_number(f"quantiles[{i}]", q) for i, q in enumerate(quantiles)]
    intervals = doc.get("intervals")
    pairs: list[tuple[float, float | None]] | None = None
    if intervals is not None:
        if not isinstance(intervals, list):
            raise InvalidInput.at("intervals", "expected a list of [lo, hi] pairs")
        pairs = []
        for i, pair in enumerate(intervals):
            if not isinstance(pair, list) or len(pair) != 2:
                raise InvalidInput.at(f"intervals[{i}]", "expected [lo, hi] (hi may be null)")
            lo = _number(f"intervals[{i}][0]", pair[0])
            hi = None if pair[1] is None else _number(f"intervals[{i}][1]", pair[1])
            pairs.append((lo, hi))
    threshold = doc.get("quick_skip_threshold_s")
    if threshold is not None:
        threshold = _number("quick_skip_threshold_s", threshold)
    return_params = doc.get("return_params", False)
    if not isinstance(return_params, bool):
        raise InvalidInput.at("return_params", f"expected true or false, got {return_params!r}")
    return PredictOptions.create(levels, pairs, threshold, return_params, _curve(doc))


def _curve(doc: Mapping[str, Any]) -> tuple[int, float] | None:
    """``(points, max_s)`` of the ``curve`` option, its types checked (ranges: PredictOptions)."""
    if "curve" not in doc or doc["curve"] is None:
        return None
    curve = doc["curve"]
    if not isinstance(curve, dict):
        raise InvalidInput.at("curve", 'expected an object {"points": n, "max_s": seconds}')
    unknown = sorted(set(curve) - CURVE_KEYS)
    if unknown:
        raise InvalidInput.at(
            f"curve.{unknown[0][:40]}", f"unknown field; allowed: {sorted(CURVE_KEYS)}"
        )
    points = curve.get("points", DEFAULT_CURVE_POINTS)
    if not isinstance(points, int) or isinstance(points, bool):
        raise InvalidInput.at("curve.points", f"expected an integer, got {_clip(points)}")
    max_s = _number("curve.max_s", curve.get("max_s", DEFAULT_CURVE_MAX_S))
    return points, max_s


def check_curve_size(options: PredictOptions, n: int, max_values: int | None) -> None:
    """413 for a curve whose rows times points exceed ``max_values``."""
    points = options.curve_points
    if max_values is not None and points and n * points > max_values:
        raise TooLarge(
            f"curve: {n} rows x {points} points = {n * points} values exceed the limit of "
            f"{max_values} per request; ask fewer points or send fewer rows",
            field="curve",
        )


def _row_count(doc: Mapping[str, Any]) -> int:
    """The rows a parsed request claims (0 when it is too malformed to say)."""
    if "features" in doc:
        features = doc["features"]
        if isinstance(features, dict):
            for values in features.values():
                return len(values) if isinstance(values, list) else 0
        return 0
    instances = doc.get("instances")
    return len(instances) if isinstance(instances, list) else 0


@dataclass(frozen=True)
class DecodedPredict:
    """A decoded native request: raw columns, options and the form the client used."""

    columns: dict[str, np.ndarray]
    n: int
    options: PredictOptions
    form: str


def decode_request(
    model: ModelRuntime,
    body: bytes,
    max_rows: int,
    admit: Callable[[int], None] | None = None,
    max_curve_values: int | None = None,
    optional: frozenset[str] = frozenset(),
) -> DecodedPredict:
    """Columns, options and form of a request body, or an InvalidInput or TooLarge.

    Columns of ``optional`` may be left out: the data plane looks them up by id.

    ``admit`` is called with the row count as soon as it is known (right after parsing),
    so that a request the queue cannot take is refused before its columns are converted.
    ``max_curve_values`` bounds rows times curve points (TooLarge past it).
    """
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise InvalidInput.at("body", "expected a JSON object")
    unknown = sorted(set(doc) - ALLOWED_KEYS)
    if unknown:
        raise InvalidInput.at(unknown[0], f"unknown field; allowed: {sorted(ALLOWED_KEYS)}")
    if ("features" in doc) == ("instances" in doc):
        raise InvalidInput.at(
            "features",
            "send exactly one of features (columnar) or instances (rows)",
        )
    if admit is not None:
        admit(min(_row_count(doc), max_rows))
    options = options_from(doc)
    form = "features" if "features" in doc else "instances"
    if form == "features":
        columns, n = columnar(model, doc["features"], max_rows, optional=optional)
    else:
        columns, n = rows_to_columns(model, doc["instances"], max_rows, optional=optional)
    check_curve_size(options, n, max_curve_values)
    return DecodedPredict(columns, n, options, form)


# --------------------------------------------------------------------------- response


def encode_response(model: ModelRuntime, result: Prediction, options: PredictOptions) -> bytes:
    """The response body: numpy arrays straight into orjson, no Python object per row."""
    c = np.ascontiguousarray  # orjson serializes only C-contiguous arrays (a no-op if already)
    body: dict[str, Any] = {
        "model": model.name,
        "version": model.version,
        "family": model.manifest.family,
        "n": result.n,
        "expected_watch_time_s": c(result.mean),
        "point_s": c(result.point),
        "std_s": c(result.std),
        "quick_skip_threshold_s": result.quick_skip_threshold_s,
        "quick_skip_prob": c(result.quick_skip_prob),
    }
    if result.quantiles is not None and options.quantiles is not None:
        body["quantiles"] = {"levels": options.quantiles, "values_s": c(result.quantiles)}
    if result.interval_mass is not None and options.intervals is not None:
        edges = [[lo, hi if math.isfinite(hi) else None] for lo, hi in options.intervals.tolist()]
        body["intervals"] = {"edges_s": edges, "mass": c(result.interval_mass)}
    if result.params is not None:
        body["params"] = {k: c(v) for k, v in result.params.items()}
    if result.curve is not None:
        curve = result.curve
        # Only atoms some row holds: a family without p0 lists none.
        keep = np.flatnonzero((curve.atom_mass > 0).any(axis=0))
        body["curve"] = {
            "t_s": c(curve.t),
            "density": curve.density,
            "note": DENSITY_NOTES[curve.density],
            "pdf": c(curve.pdf),
            "cdf": c(curve.cdf),
            "atoms": {"at_s": c(curve.atom_at[:, keep]), "mass": c(curve.atom_mass[:, keep])},
        }
    return orjson.dumps(body, option=JSON_OPTIONS)
