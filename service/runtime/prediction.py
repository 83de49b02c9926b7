"""What a request asks the model for, and what it gets back, as whole-batch numpy arrays.

The only per-request Python work is proportional to the number of requested quantiles and
intervals, never to the number of rows. A Prediction holds numpy arrays, so the protocol
layer serializes it without building one Python object per row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.distributions.curve import Curve, grid
from service.errors import InvalidInput

FloatArray = npt.NDArray[np.float64]

MAX_QUANTILES = 100
"""Most quantile levels one request may ask for (each costs a root search per row)."""

MAX_INTERVALS = 100
"""Most intervals one request may ask for."""

MAX_CURVE_POINTS = 2000
"""Most grid points of one curve (the rows times points of a request have a limit of their
own, ``WATCHTIME_MAX_CURVE_VALUES``)."""

MAX_CURVE_SECONDS = 1e7
"""Largest ``max_s`` of a curve: about 116 days, far beyond any watch time."""


@dataclass(frozen=True)
class PredictOptions:
    """What to compute besides the always-present mean, point, spread and skip probability.

    Build it with :meth:`create`, which validates every value; ``intervals`` holds
    ``+inf`` for an open upper edge; ``curve`` holds the grid of times of the curve asked.
    """

    quantiles: FloatArray | None = None
    intervals: FloatArray | None = None
    quick_skip_threshold_s: float | None = None
    return_params: bool = False
    curve: FloatArray | None = None

    @classmethod
    def create(
        cls,
        quantiles: Sequence[float] | None = None,
        intervals: Sequence[Sequence[float | None]] | None = None,
        quick_skip_threshold_s: float | None = None,
        return_params: bool = False,
        curve: tuple[int, float] | None = None,
    ) -> PredictOptions:
        """Validated options; InvalidInput names the offending field and index."""
        q = None
        if quantiles is not None:
            if len(quantiles) > MAX_QUANTILES:
                raise InvalidInput.at("quantiles", f"at most {MAX_QUANTILES} levels")
            q = np.asarray(quantiles, dtype=np.float64).reshape(-1)
            bad = ~((q > 0.0) & (q < 1.0))
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidInput.at(f"quantiles[{i}]", f"level {q[i]!r} is not inside (0, 1)")
        e = None
        if intervals is not None:
            if len(intervals) > MAX_INTERVALS:
                raise InvalidInput.at("intervals", f"at most {MAX_INTERVALS} intervals")
            e = np.empty((len(intervals), 2), dtype=np.float64)
            for i, pair in enumerate(intervals):
                if len(pair) != 2:
                    raise InvalidInput.at(f"intervals[{i}]", "an interval is [lo, hi]")
                lo, hi = pair[0], pair[1]
                if lo is None or not math.isfinite(lo):
                    raise InvalidInput.at(f"intervals[{i}]", "lo must be a finite number")
                if hi is None:
                    hi = math.inf
                elif not math.isfinite(hi):
                    raise InvalidInput.at(f"intervals[{i}]", "hi must be a finite number or null")
                if lo > hi:
                    raise InvalidInput.at(f"intervals[{i}]", f"lo {lo!r} > hi {hi!r}")
                e[i] = (lo, hi)
        if quick_skip_threshold_s is not None and not (
            math.isfinite(quick_skip_threshold_s) and quick_skip_threshold_s >= 0.0
        ):
            raise InvalidInput.at(
                "quick_skip_threshold_s", f"{quick_skip_threshold_s!r} is not a finite number >= 0"
            )
        return cls(q, e, quick_skip_threshold_s, return_params, _curve_grid(curve))

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
            None if self.curve is None else self.curve.tobytes(),
        )

    @property
    def curve_points(self) -> int:
        """Grid points of the curve asked for (0: none)."""
        return 0 if self.curve is None else int(self.curve.size)


def _curve_grid(curve: tuple[int, float] | None) -> FloatArray | None:
    """The grid of a ``(points, max_s)`` curve request; InvalidInput names the bad value."""
    if curve is None:
        return None
    points, max_s = curve
    if not 2 <= points <= MAX_CURVE_POINTS:
        raise InvalidInput.at(
            "curve.points", f"{points!r} is not an integer from 2 to {MAX_CURVE_POINTS}"
        )
    if not (math.isfinite(max_s) and 0.0 < max_s <= MAX_CURVE_SECONDS):
        raise InvalidInput.at(
            "curve.max_s", f"{max_s!r} is not a number of seconds in (0, {MAX_CURVE_SECONDS:g}]"
        )
    return grid(points, max_s)


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
    curve: Curve | None = None

    def rows(self, start: int, stop: int) -> Prediction:
        """Rows ``start:stop`` (views, no copies)."""

        def cut(a: FloatArray | None) -> FloatArray | None:
            return None if a is None else a[start:stop]

        return Prediction(
            n=stop - start,
            mean=self.mean[start:stop],
            point=self.point[start:stop],
            std=self.std[start:stop],
            quick_skip_threshold_s=self.quick_skip_threshold_s,
            quick_skip_prob=self.quick_skip_prob[start:stop],
            quantiles=cut(self.quantiles),
            interval_mass=cut(self.interval_mass),
            params=None
            if self.params is None
            else {k: v[start:stop] for k, v in self.params.items()},
            curve=None if self.curve is None else self.curve.rows(start, stop),
        )

    @classmethod
    def concat(cls, parts: Sequence[Prediction]) -> Prediction:
        """The rows of several Predictions of one request (same options), in order."""

        def cat(arrays: list[FloatArray | None]) -> FloatArray | None:
            return None if arrays[0] is None else np.concatenate(arrays)  # type: ignore[arg-type]

        first = parts[0]
        params = None
        if first.params is not None:
            params = {
                k: np.concatenate([p.params[k] for p in parts if p.params]) for k in first.params
            }
        return cls(
            n=sum(p.n for p in parts),
            mean=np.concatenate([p.mean for p in parts]),
            point=np.concatenate([p.point for p in parts]),
            std=np.concatenate([p.std for p in parts]),
            quick_skip_threshold_s=first.quick_skip_threshold_s,
            quick_skip_prob=np.concatenate([p.quick_skip_prob for p in parts]),
            quantiles=cat([p.quantiles for p in parts]),
            interval_mass=cat([p.interval_mass for p in parts]),
            params=params,
            curve=None
            if first.curve is None
            else Curve.concat([p.curve for p in parts if p.curve]),
        )
