"""From a batch's distributions to the numbers each request asked for, one numpy pass each.

A batch holds the rows of many requests, each with its own quantile levels, intervals and
quick-skip threshold. Requests asking the same share the cheapest form (levels and edges
shared by every row); a mix is answered with per-row levels, edges and thresholds, so the
batch still costs one numpy call per statistic rather than one per request. Every statistic
is row by row, so a request's numbers do not depend on its batch-mates. Curves are the one
exception to the single call: in a mixed batch each request's curve is drawn on its own
grid from its own rows (a call per request asking one, never one per row).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from service.distributions import Distribution
from service.distributions.curve import curve
from service.errors import FeatureError
from service.runtime.prediction import FloatArray, Prediction, PredictOptions

NO_DISTRIBUTION = "the model gives no finite distribution here"

Params = dict[str, FloatArray]


def bad_rows(params: Mapping[str, FloatArray]) -> npt.NDArray[np.bool_]:
    """Rows where some parameter is not finite."""
    bad: npt.NDArray[np.bool_] | None = None
    for value in params.values():
        finite = np.isfinite(value)
        row_ok = finite.all(axis=tuple(range(1, finite.ndim))) if finite.ndim > 1 else finite
        rows_bad = np.logical_not(row_ok)
        bad = rows_bad if bad is None else np.logical_or(bad, rows_bad)
    return np.zeros(0, dtype=np.bool_) if bad is None else bad


def first_bad_row(params: Mapping[str, FloatArray]) -> int | None:
    bad = bad_rows(params)
    return int(np.argmax(bad)) if bad.any() else None


def summarize(dist: Distribution, options: PredictOptions, default_threshold: float) -> Prediction:
    """Every number ``options`` asks for, for every row of ``dist``."""
    n = dist.n
    threshold = options.threshold(default_threshold)
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
        curve=None if options.curve is None else curve(dist, options.curve),
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


def summarize_mixed(
    dist: Distribution,
    options: Sequence[PredictOptions],
    counts: Sequence[int],
    default_threshold: float,
) -> Prediction:
    """The union of what consecutive row blocks ask, with per-row levels, edges, thresholds."""
    per_request = [o.threshold(default_threshold) for o in options]
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


def own_columns(
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
        curve=result.curve if options.curve is not None else None,
    )


def summarize_blocks(
    params: Params,
    requests: Sequence[tuple[int, PredictOptions]],
    distribution: Callable[[Params], Distribution],
    default_threshold: float,
) -> list[Prediction | FeatureError]:
    """The Predictions of consecutive row blocks of one run (``requests``: each block's row
    count and options, in row order), with one call per statistic.

    A block whose rows hold no finite distribution gets a FeatureError naming its own row,
    and the others are answered.
    """
    counts = [count for count, _ in requests]
    starts = np.cumsum([0, *counts])
    bad = bad_rows(params)
    failed: dict[int, FeatureError] = {}
    if bad.any():
        for i, (lo, hi) in enumerate(itertools.pairwise(starts)):
            where = np.flatnonzero(bad[lo:hi])
            if where.size:
                failed[i] = FeatureError(None, NO_DISTRIBUTION, int(where[0]))
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
        dist = distribution(params)
        if all(o.key() == first.key() for o in options[1:]):
            whole = summarize(dist, first, default_threshold)
        else:
            whole = summarize_mixed(dist, options, counts, default_threshold)
        start = 0
        for count, opts in requests:
            part = own_columns(whole.rows(start, start + count), opts, default_threshold)
            if opts.curve is not None and part.curve is None:
                # A mixed batch draws each request's curve on its own grid, from its rows.
                own = dist.take(np.arange(start, start + count))
                part = replace(part, curve=curve(own, opts.curve))
            answers.append(part)
            start += count
    out: list[Prediction | FeatureError] = []
    it = iter(answers)
    for i in range(len(counts) + len(failed)):
        out.append(failed[i] if i in failed else next(it))
    return out
