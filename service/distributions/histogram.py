"""Histogram: probabilities over watch-time buckets, for bucket-classification baselines.

Parameters: ``probs`` (n, B), non-negative, renormalised per row to sum to 1 (a
softmax's rounding, or raw scores, are absorbed), and ``edges``, shared (B+1,) or
per row (n, B+1): finite, strictly increasing, ``edges[0] == 0``. There is no atom:
bucket 0 spreads its mass over ``[0, edges[1])``.

Rules:

* Buckets ``0 .. B-2`` hold their mass uniformly on ``[edges[j], edges[j+1])``.
* The last bucket is open: a classifier's top class means "at least
  ``edges[B-1]``", and ``edges[B]`` is only its nominal end. Its mass is spread as
  an exponential tail starting at ``edges[B-1]`` whose mean is half the nominal
  width, ``w/2`` with ``w = edges[B] - edges[B-1]`` (rate ``2/w``). Its mean is then
  the nominal midpoint, exactly as if the bucket were uniform, while the CDF stays
  continuous and strictly below 1, so every level below 1 has a finite quantile and
  the support is unbounded, as watch time is.

Mean: ``sum_j probs_j * (edges[j] + edges[j+1]) / 2``, the bucket-midpoint mean the
baselines report. Point: the optional per-row ``point`` (n,), >= 0, when the model
emits one (a regressor's own prediction beside its bucket masses), else the mean.
Variance: within-bucket variances (``w_j**2/12``, and ``(w/2)**2`` for the tail) plus
the spread of the bucket means, a sum of non-negative terms.

The cumulative masses are formed once per row and normalised so the last is exactly
1, and bucket ``j``'s CDF is capped at the next cumulative mass, so the CDF is
monotone to the last bit. Quantiles are closed form: the bucket is found by
comparing the level with the cumulative masses, then inverted linearly inside, or
as ``edges[B-1] + (w/2) * log((1 - C) / (1 - q))`` in the tail (``C`` the mass
below it), which keeps levels close to 1 exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from service.distributions.arrays import FloatArray, IntArray, gather_rows
from service.distributions.base import Distribution
from service.distributions.cache import cached, cached_rows
from service.distributions.constraints import (
    increasing_from_zero,
    nonnegative,
    unnormalised_simplex,
)
from service.distributions.params import Param, ParameterError


class Histogram(Distribution):
    """Bucket probabilities, uniform inside closed buckets, exponential in the open one."""

    family: ClassVar[str] = "histogram"
    curve_density: ClassVar[str] = "step"
    arg_constraints: ClassVar[Mapping[str, Param]] = {
        "probs": Param(unnormalised_simplex, vector=True),
        "edges": Param(increasing_from_zero, vector=True, shared=True),
        "point": Param(nonnegative, required=False),
    }

    def _validate(self) -> None:
        self._check_grid("edges", "probs", 1)

    def _check_grid(self, grid: str, values: str, extra: int) -> None:
        """Refuse a grid (shared or per row) whose length is not that of the per-row
        ``values`` plus ``extra``, or ``values`` of no entries."""
        g, v = self._args[grid], self._args[values]
        m = v.shape[1]
        if m < 1 or g.shape[-1] != m + extra:
            raise ParameterError(
                f"{self.family}: {grid} {g.shape} do not fit {values} {v.shape} "
                f"(need {m + extra} {grid})"
            )

    # ----- buckets ----------------------------------------------------------------------

    def _bucket_probs(self) -> FloatArray:
        """The buckets' probabilities as the model gave them, (n, B), not yet normalised."""
        return self._args["probs"]

    @cached
    def _grid(self) -> FloatArray:
        """The bucket edges, shared (B+1,) or per row (n, B+1)."""
        return self._args["edges"]

    @cached_rows
    def cum(self) -> FloatArray:
        """Mass below each edge, (n, B+1), the last exactly 1."""
        p = self._bucket_probs()
        n = p.shape[0]
        top = p.max(axis=1, keepdims=True)
        # Scaled by the row maximum first so that huge raw scores cannot overflow the sum.
        running = np.concatenate([np.zeros((n, 1)), np.cumsum(p / top, axis=1)], axis=1)
        return running / running[:, -1:]

    @cached_rows
    def mass(self) -> FloatArray:
        return np.diff(self.cum, axis=1)

    @property
    def shared_edges(self) -> FloatArray | None:
        grid = self._grid
        return grid if grid.ndim == 1 else None

    @cached
    def edges(self) -> FloatArray:
        """The edges per row, (n, B+1): a broadcast view when they are shared, so a child
        of ``take`` derives its own rather than gathering copies."""
        grid = self._grid
        return np.broadcast_to(grid, (self.n, grid.shape[0])) if grid.ndim == 1 else grid

    def params(self) -> dict[str, FloatArray]:
        out = {"probs": self.mass, "edges": self._grid}
        if "point" in self._args:
            out["point"] = self._args["point"]
        return out

    def point(self) -> FloatArray:
        """The model's own point when it emits one, else the mean."""
        given = self._args.get("point")
        return self.mean() if given is None else given

    # ----- moments ----------------------------------------------------------------------

    def _bucket_moments(self) -> tuple[FloatArray, FloatArray]:
        """Mean and variance of each bucket's own law, (n, B); the tail as documented."""
        width = np.diff(self.edges, axis=1)
        mid = self.edges[:, :-1] + 0.5 * width
        var = width**2 / 12.0
        var[:, -1] = (0.5 * width[:, -1]) ** 2
        return mid, var

    def mean(self) -> FloatArray:
        mid, _ = self._bucket_moments()
        return (self.mass * mid).sum(axis=1)

    def variance(self) -> FloatArray:
        mid, var = self._bucket_moments()
        mean = (self.mass * mid).sum(axis=1)
        return (self.mass * ((mid - mean[:, None]) ** 2 + var)).sum(axis=1)

    # ----- kernels ------------------------------------------------------------------------

    def _edge_grid(self) -> FloatArray:
        """Edges as (1, B+1) when shared, so lookups need not repeat them per row."""
        return self.edges if self.shared_edges is None else self.shared_edges[None, :]

    def _bucket_of(self, t: FloatArray) -> IntArray:
        """Index of the bucket holding each ``t >= 0``: the interior edges at or below it."""
        b = self.mass.shape[1]
        if self.shared_edges is not None:
            return np.searchsorted(self.shared_edges[1:b], t, side="right").astype(np.intp)
        inner = self.edges[:, None, 1:b]
        return (inner <= t[:, :, None]).sum(axis=2).astype(np.intp)

    def _locate(self, j: IntArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Per point: mass below bucket ``j``, its mass, its left edge and its width."""
        edges = self._edge_grid()
        lo = gather_rows(edges, j)
        width = gather_rows(edges, j + 1) - lo
        return gather_rows(self.cum, j), gather_rows(self.mass, j), lo, width

    def cdf_pdf(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        j = self._bucket_of(t)
        below, mass, lo, width = self._locate(j)
        tail = j == self.mass.shape[1] - 1
        x = t - lo
        frac = np.clip(x / width, 0.0, 1.0)
        inner_cdf = np.minimum(below + mass * frac, gather_rows(self.cum, j + 1))
        rate = 2.0 / width
        with np.errstate(under="ignore", over="ignore"):
            decay = np.exp(-rate * x)
            tail_cdf = below - mass * np.expm1(-rate * x)
            cdf = np.where(tail, tail_cdf, inner_cdf)
            pdf = np.where(tail, mass * rate * decay, mass / width)
        return cdf, pdf

    def _log_prob(self, t: FloatArray) -> FloatArray:
        j = self._bucket_of(t)
        _, mass, lo, width = self._locate(j)
        tail = j == self.mass.shape[1] - 1
        with np.errstate(divide="ignore", over="ignore"):
            log_mass = np.log(mass)
            rate = 2.0 / width
            return np.where(
                tail, log_mass + np.log(rate) - rate * (t - lo), log_mass - np.log(width)
            )

    def _icdf(self, q: FloatArray) -> FloatArray:
        b = self.mass.shape[1]
        # The bucket whose cumulative range (C_j, C_j+1] holds q: never an empty bucket.
        j = (self.cum[:, None, 1:b] < q[:, :, None]).sum(axis=2).astype(np.intp)
        below, mass, lo, width = self._locate(j)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            frac = np.where(mass > 0, (q - below) / mass, 0.0)
            inner = lo + width * np.clip(frac, 0.0, 1.0)
            depth = np.maximum(np.log1p(-below) - np.log1p(-q), 0.0)
            tail = lo + 0.5 * width * depth
        return np.where(j == b - 1, tail, inner)
