"""One prediction: raw columns -> features -> onnxruntime -> the numbers ranking needs.

Everything here is whole-batch numpy: the only per-request Python work is proportional to
the number of columns and requested quantiles/intervals, never to the number of rows. The
result holds numpy arrays, so the protocol layer can serialize them without building one
Python object per row.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service import metrics
from service.distributions import Distribution, ParameterError
from service.runtime.features import FeatureError, encode_features
from service.runtime.repository import LoadedModel, ModelLoadError, example_columns

FloatArray = npt.NDArray[np.float64]

MAX_QUANTILES = 100
"""Most quantile levels one request may ask for (each costs a root search per row)."""

MAX_INTERVALS = 100
"""Most intervals one request may ask for."""


class InvalidInput(ValueError):
    """A request value the model cannot be asked with; names the field and, if any, the row."""

    def __init__(self, field: str, message: str, row: int | None = None) -> None:
        self.field = field
        self.row = row
        where = field + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {message}")
        self.message = message


@dataclass(frozen=True)
class PredictOptions:
    """What to compute besides the always-present mean, point, spread and skip probability.

    Build it with :meth:`create`, which validates every value; ``intervals`` holds
    ``+inf`` for an open upper edge.
    """

    quantiles: FloatArray | None = None
    intervals: FloatArray | None = None
    quick_skip_threshold_s: float | None = None
    return_params: bool = False

    @classmethod
    def create(
        cls,
        quantiles: Sequence[float] | None = None,
        intervals: Sequence[Sequence[float | None]] | None = None,
        quick_skip_threshold_s: float | None = None,
        return_params: bool = False,
    ) -> PredictOptions:
        """Validated options; InvalidInput names the offending field and index."""
        q = None
        if quantiles is not None:
            if len(quantiles) > MAX_QUANTILES:
                raise InvalidInput("quantiles", f"at most {MAX_QUANTILES} levels")
            q = np.asarray(quantiles, dtype=np.float64).reshape(-1)
            bad = ~((q > 0.0) & (q < 1.0))
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidInput(f"quantiles[{i}]", f"level {q[i]!r} is not inside (0, 1)")
        e = None
        if intervals is not None:
            if len(intervals) > MAX_INTERVALS:
                raise InvalidInput("intervals", f"at most {MAX_INTERVALS} intervals")
            e = np.empty((len(intervals), 2), dtype=np.float64)
            for i, pair in enumerate(intervals):
                if len(pair) != 2:
                    raise InvalidInput(f"intervals[{i}]", "an interval is [lo, hi]")
                lo, hi = pair[0], pair[1]
                if lo is None or not math.isfinite(lo):
                    raise InvalidInput(f"intervals[{i}]", "lo must be a finite number")
                if hi is None:
                    hi = math.inf
                elif not math.isfinite(hi):
                    raise InvalidInput(f"intervals[{i}]", "hi must be a finite number or null")
                if lo > hi:
                    raise InvalidInput(f"intervals[{i}]", f"lo {lo!r} > hi {hi!r}")
                e[i] = (lo, hi)
        if quick_skip_threshold_s is not None and not (
            math.isfinite(quick_skip_threshold_s) and quick_skip_threshold_s >= 0.0
        ):
            raise InvalidInput(
                "quick_skip_threshold_s", f"{quick_skip_threshold_s!r} is not a finite number >= 0"
            )
        return cls(q, e, quick_skip_threshold_s, return_params)

    def threshold(self, default: float) -> float:
        """The quick-skip threshold asked for, else the model's ``default``."""
        return float(
            default if self.quick_skip_threshold_s is None else self.quick_skip_threshold_s
        )

    def key(self) -> tuple[object, ...]:
        """A hashable value equal for options that ask for exactly the same numbers."""
        return (
            None if self.quantiles is None else self.quantiles.tobytes(),
            None if self.intervals is None else self.intervals.tobytes(),
            self.quick_skip_threshold_s,
            self.return_params,
        )


@dataclass(frozen=True)
class Prediction:
    """Per-row results of one request, as numpy arrays in request order (seconds)."""

    n: int
    mean: FloatArray
    point: FloatArray
    std: FloatArray
    quick_skip_threshold_s: float
    quick_skip_prob: FloatArray
    quantiles: FloatArray | None
    interval_mass: FloatArray | None
    params: dict[str, FloatArray] | None


def slice_prediction(result: Prediction, start: int, stop: int) -> Prediction:
    """Rows ``start:stop`` of a Prediction (views, no copies)."""

    def cut(a: FloatArray | None) -> FloatArray | None:
        return None if a is None else a[start:stop]

    return Prediction(
        n=stop - start,
        mean=result.mean[start:stop],
        point=result.point[start:stop],
        std=result.std[start:stop],
        quick_skip_threshold_s=result.quick_skip_threshold_s,
        quick_skip_prob=result.quick_skip_prob[start:stop],
        quantiles=cut(result.quantiles),
        interval_mass=cut(result.interval_mass),
        params=None
        if result.params is None
        else {k: v[start:stop] for k, v in result.params.items()},
    )


def concat_predictions(parts: Sequence[Prediction]) -> Prediction:
    """The rows of several Predictions of one request (same options), in order."""

    def cat(arrays: list[FloatArray | None]) -> FloatArray | None:
        return None if arrays[0] is None else np.concatenate(arrays)  # type: ignore[arg-type]

    first = parts[0]
    params = None
    if first.params is not None:
        params = {k: np.concatenate([p.params[k] for p in parts if p.params]) for k in first.params}
    return Prediction(
        n=sum(p.n for p in parts),
        mean=np.concatenate([p.mean for p in parts]),
        point=np.concatenate([p.point for p in parts]),
        std=np.concatenate([p.std for p in parts]),
        quick_skip_threshold_s=first.quick_skip_threshold_s,
        quick_skip_prob=np.concatenate([p.quick_skip_prob for p in parts]),
        quantiles=cat([p.quantiles for p in parts]),
        interval_mass=cat([p.interval_mass for p in parts]),
        params=params,
    )


def observe_prediction(model: str, results: Sequence[Prediction], postprocess_s: float) -> None:
    """Post-processing time of a batch and the drift histograms of the numbers it served."""
    metrics.POSTPROCESS_DURATION.labels(model).observe(postprocess_s)
    means = results[0].mean if len(results) == 1 else np.concatenate([r.mean for r in results])
    skips = (
        results[0].quick_skip_prob
        if len(results) == 1
        else np.concatenate([r.quick_skip_prob for r in results])
    )
    metrics.observe_many(metrics.PREDICTED_WATCH_TIME.labels(model), means)
    metrics.observe_many(metrics.PREDICTED_QUICK_SKIP.labels(model), skips)


def encode(model: LoadedModel, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model input tensors; FeatureError names a missing or malformed column (and row)."""
    tensors = encode_features(model.manifest, columns)
    for spec in model.manifest.inputs:
        tensor = tensors[spec.name]
        if tensor.dtype.kind == "f":
            bad = ~np.isfinite(tensor)
            if bad.any():
                row, col = (int(i) for i in np.argwhere(bad)[0])
                feature = spec.columns[col]
                source = next(
                    (f.source for f in model.manifest.features if f.name == feature), feature
                )
                raise FeatureError(source, "value is out of the range the model accepts", row)
    return tensors


def run_model(model: LoadedModel, tensors: Mapping[str, np.ndarray]) -> dict[str, FloatArray]:
    """Family parameters (float64) from the onnxruntime session, keyed by parameter name."""
    outs = model.session.run(model.output_names, dict(tensors))
    return {
        param: np.asarray(out, dtype=np.float64)
        for param, out in zip(model.manifest.outputs, outs, strict=True)
    }


def _bad_rows(params: Mapping[str, FloatArray]) -> npt.NDArray[np.bool_]:
    """Rows where some parameter is not finite."""
    bad: npt.NDArray[np.bool_] | None = None
    for value in params.values():
        finite = np.isfinite(value)
        row_ok = finite.all(axis=tuple(range(1, finite.ndim))) if finite.ndim > 1 else finite
        rows_bad = np.logical_not(row_ok)
        bad = rows_bad if bad is None else np.logical_or(bad, rows_bad)
    return np.zeros(0, dtype=np.bool_) if bad is None else bad


def _first_bad_row(params: Mapping[str, FloatArray]) -> int | None:
    bad = _bad_rows(params)
    return int(np.argmax(bad)) if bad.any() else None


def _distribution(model: LoadedModel, params: dict[str, FloatArray]) -> Distribution:
    """The model's family over ``params``; InvalidInput when they are not a distribution."""
    try:
        return model.family.from_params(params)
    except ParameterError as exc:
        raise InvalidInput("features", f"the model output is not a distribution: {exc}") from None


def postprocess(
    model: LoadedModel, params: dict[str, FloatArray], options: PredictOptions
) -> Prediction:
    """The served numbers from the family parameters, all vectorized over rows."""
    bad_row = _first_bad_row(params)
    if bad_row is not None:
        raise InvalidInput("features", "the model gives no finite distribution here", bad_row)
    dist = _distribution(model, params)
    n = dist.n
    threshold = options.threshold(model.manifest.quick_skip_threshold_s)
    quantiles = None
    if options.quantiles is not None:
        quantiles = (
            dist.icdf(options.quantiles)
            if n
            else np.empty((0, options.quantiles.size), dtype=np.float64)
        )
    masses = None
    quick_skip: FloatArray | None = None
    if options.intervals is not None:
        if n:
            # One CDF evaluation for the threshold and every distinct edge together.
            masses, quick_skip = dist.interval_mass_and_cdf(options.intervals, threshold)
        else:
            masses = np.empty((0, options.intervals.shape[0]), dtype=np.float64)
    if quick_skip is None:
        quick_skip = dist.quick_skip_prob(threshold)
    return Prediction(
        n=n,
        mean=dist.mean(),
        point=dist.point(),
        std=dist.stddev(),
        quick_skip_threshold_s=threshold,
        quick_skip_prob=quick_skip,
        quantiles=quantiles,
        interval_mass=masses,
        params=dist.params() if options.return_params else None,
    )


def _per_row(
    values: Sequence[FloatArray | None], filler: FloatArray, counts: Sequence[int]
) -> FloatArray | None:
    """Each request's levels ``(m,)`` or edges ``(m, 2)`` on each of its rows.

    Padded to the widest request by repeating its last entry (``filler`` where it asks
    none); each request later keeps only its own columns. A row's statistic at one level or
    interval depends on nothing but that row and that level or interval, so padding changes
    no answer. None when no request asks any.
    """
    width = max((v.shape[0] for v in values if v is not None), default=0)
    if width == 0:
        return None
    blocks = []
    for v, count in zip(values, counts, strict=True):
        own = filler if v is None or not v.size else v
        padded = np.concatenate([own, np.repeat(own[-1:], width - own.shape[0], axis=0)])
        blocks.append(np.broadcast_to(padded, (count, *padded.shape)))
    return np.concatenate(blocks)


def postprocess_batch(
    model: LoadedModel,
    params: dict[str, FloatArray],
    requests: Sequence[tuple[int, PredictOptions]],
) -> list[Prediction | InvalidInput]:
    """The Predictions of consecutive row blocks of one run, with one call per statistic.

    ``requests`` holds each block's row count and options, in row order. Blocks asking the
    same options share the cheapest form (levels and edges shared by every row); a mix of
    options is answered with per-row levels, edges and thresholds, so the batch still costs
    one numpy pass per statistic rather than one per request. Every statistic is row by row,
    so a block's numbers do not depend on its batch-mates. A block whose rows hold no finite
    distribution gets an InvalidInput naming its own row, and the others are answered.
    """
    counts = [count for count, _ in requests]
    starts = np.cumsum([0, *counts])
    bad = _bad_rows(params)
    failed: dict[int, InvalidInput] = {}
    if bad.any():
        for i, (lo, hi) in enumerate(itertools.pairwise(starts)):
            where = np.flatnonzero(bad[lo:hi])
            if where.size:
                failed[i] = InvalidInput(
                    "features", "the model gives no finite distribution here", int(where[0])
                )
        if failed:
            keep = [i for i in range(len(requests)) if i not in failed]
            rows = np.concatenate(
                [np.arange(starts[i], starts[i + 1]) for i in keep] or [np.empty(0, np.intp)]
            )
            params = {k: v[rows] for k, v in params.items()}
            requests = [requests[i] for i in keep]
            counts = [counts[i] for i in keep]
    answers: list[Prediction] = []
    if requests:
        options = [opts for _, opts in requests]
        first = options[0]
        if all(o.key() == first.key() for o in options[1:]):
            whole = postprocess(model, params, first)
        else:
            whole = _postprocess_mixed(model, params, options, counts)
        start = 0
        for count, opts in requests:
            part = slice_prediction(whole, start, start + count)
            answers.append(_own_columns(part, opts, model.manifest.quick_skip_threshold_s))
            start += count
    out: list[Prediction | InvalidInput] = []
    it = iter(answers)
    for i in range(len(counts) + len(failed)):
        out.append(failed[i] if i in failed else next(it))
    return out


def _own_columns(
    result: Prediction, options: PredictOptions, default_threshold: float
) -> Prediction:
    """A block's Prediction cut to the levels, intervals and params its request asked for."""
    q = result.quantiles
    if q is not None:
        q = None if options.quantiles is None else q[:, : options.quantiles.size]
    masses = result.interval_mass
    if masses is not None:
        masses = None if options.intervals is None else masses[:, : options.intervals.shape[0]]
    return Prediction(
        n=result.n,
        mean=result.mean,
        point=result.point,
        std=result.std,
        quick_skip_threshold_s=options.threshold(default_threshold),
        quick_skip_prob=result.quick_skip_prob,
        quantiles=q,
        interval_mass=masses,
        params=result.params if options.return_params else None,
    )


def _postprocess_mixed(
    model: LoadedModel,
    params: dict[str, FloatArray],
    options: Sequence[PredictOptions],
    counts: Sequence[int],
) -> Prediction:
    dist = _distribution(model, params)
    per_request = [o.threshold(model.manifest.quick_skip_threshold_s) for o in options]
    thresholds = np.repeat(np.asarray(per_request, dtype=np.float64), counts)
    levels = _per_row([o.quantiles for o in options], np.array([0.5]), counts)
    edges = _per_row([o.intervals for o in options], np.array([[0.0, np.inf]]), counts)
    return Prediction(
        n=dist.n,
        mean=dist.mean(),
        point=dist.point(),
        std=dist.stddev(),
        quick_skip_threshold_s=float(per_request[0]),
        quick_skip_prob=dist.quick_skip_prob(thresholds),
        quantiles=None if levels is None else dist.icdf(levels),
        interval_mass=None if edges is None else dist.interval_mass(edges),
        params=dist.params() if any(o.return_params for o in options) else None,
    )


def predict(
    model: LoadedModel, columns: Mapping[str, np.ndarray], options: PredictOptions
) -> Prediction:
    """Everything a request asks for, for raw request columns of equal length.

    Raises FeatureError (a column the manifest cannot encode) or InvalidInput (a value the
    model cannot answer for); both name the field and the row.
    """
    return postprocess(model, run_model(model, encode(model, columns)), options)


def warm_up(model: LoadedModel, rows: int) -> None:
    """Run the whole path once per batch shape, so the first real request is not the slow one.

    onnxruntime allocates and plans lazily on the first run of a shape; the post-processor's
    root search and numpy's kernels also pay a first-call cost. A failure here means the
    model cannot serve, so it is reported as a load error.
    """
    options = PredictOptions.create(
        quantiles=[0.1, 0.5, 0.9], intervals=[(0.0, 3.0), (3.0, None)], return_params=True
    )
    try:
        for n in sorted({1, rows}):
            result = predict(model, example_columns(model, n), options)
            if not np.all(np.isfinite(result.mean)):
                raise ModelLoadError("warm-up gave a non-finite expected watch time")
    except (FeatureError, InvalidInput, ValueError) as exc:
        raise ModelLoadError(f"warm-up failed: {exc}") from None
