"""Quantile: a quantile function given at K levels, for quantile-regression models.

Parameters: ``levels`` shared (K,) or per row (n, K), strictly increasing inside (0, 1),
and ``values`` (n, K), non-negative and non-decreasing along each row, with a last value
above 0: the model's watch time at each level. Optional ``point`` (n,), >= 0: the model's
own point prediction, served as :meth:`point` (the mean when absent).

The quantile function ``Q`` on [0, 1), with the knot ``(tau_0, v_0) = (0, 0)`` put in
front of the given ones:

* Between knots ``Q`` is linear: on ``[tau_j, tau_{j+1}]`` the mass ``tau_{j+1} - tau_j``
  is spread uniformly over ``[v_j, v_{j+1}]``. Below the first level this is the line from
  0 at level 0 to ``v_1``: no atom at 0, unless ``v_1 == 0``.
* Equal consecutive values are atoms: ``v_j == v_{j+1}`` puts the mass ``tau_{j+1} -
  tau_j`` on the one point ``v_j``. The atom at 0, :meth:`atom`, is ``tau_m`` for the last
  knot ``m`` whose value is 0 (so a row whose first value is 0 has an atom of at least
  ``tau_1``).
* Above the last level an exponential tail: ``Q(u) = v_K + beta * log((1 - tau_K) / (1 - u))``,
  the mass ``1 - tau_K`` beyond ``v_K`` with mean excess ``beta``. ``beta = (1 - tau_K) *
  (v_K - v_j) / (tau_K - tau_j)`` with ``j`` the last knot whose value is below ``v_K``:
  when the last segment is not flat (``j = K - 1``) the tail's density at ``v_K`` equals
  the last segment's, ``(tau_K - tau_{K-1}) / (v_K - v_{K-1})``, so the density is
  continuous there; after a flat last segment (an atom at ``v_K``) the slope of the
  segment from the last lower value is used. A last value above 0 makes ``beta > 0``.

It is exactly a mixture of uniforms on ``[v_j, v_{j+1}]`` (points where the two are equal)
and ``v_K + Exp(mean beta)``, weighted by the level gaps and ``1 - tau_K``, so:

* CDF: ``tau_j + (tau_{j+1} - tau_j) (t - v_j) / (v_{j+1} - v_j)`` with ``j`` the last
  knot at or below ``t``; beyond ``v_K``, ``1 - (1 - tau_K) exp(-(t - v_K) / beta)``.
  Right-continuous: at an atom it includes the atom's mass.
* Density (what :meth:`log_prob` gives): ``(tau_{j+1} - tau_j) / (v_{j+1} - v_j)`` on a
  segment (the right-hand one at a knot), the exponential's in the tail. At 0 with an atom
  there ``log_prob`` is ``log P(T == 0)``, as in every family; at an atom above 0 it is
  the continuous part's density, the segment after the atom's value. Interval masses
  follow the base rule, ``F(hi) - F(lo)`` for ``lo > 0``: an atom at ``lo > 0`` is not in
  ``[lo, hi]``'s mass.
* Quantiles are ``Q`` itself, closed form (no search): the smallest ``t`` with
  ``F(t) >= q``, since ``Q`` is continuous and non-decreasing.
* Mean: ``sum_j (tau_{j+1} - tau_j) (v_j + v_{j+1}) / 2 + (1 - tau_K) (v_K + beta)``.
  Variance: the mixture's, a sum of non-negative terms (within-piece variances
  ``(v_{j+1} - v_j)**2 / 12`` and ``beta**2``, plus the spread of the pieces' means).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from service.distributions.arrays import FloatArray, IntArray, gather_rows
from service.distributions.base import Distribution
from service.distributions.cache import cached, cached_rows
from service.distributions.constraints import Constraint, nonnegative
from service.distributions.params import Param, ParameterError

#: levels strictly inside (0, 1), each larger than the one before
increasing_inside_unit = Constraint(
    "lie in (0, 1) and be strictly increasing",
    lambda v: bool((v > 0).all() and (v < 1).all() and (np.diff(v, axis=-1) > 0).all()),
)
#: a quantile function's values: >= 0 and never falling along a row
nonnegative_nondecreasing = Constraint(
    "be >= 0 and non-decreasing",
    lambda v: bool((v >= 0).all() and (np.diff(v, axis=-1) >= 0).all()),
)


class Quantile(Distribution):
    """A piecewise-linear quantile function through given levels, with an exponential tail."""

    family: ClassVar[str] = "quantile"
    curve_density: ClassVar[str] = "step"
    arg_constraints: ClassVar[Mapping[str, Param]] = {
        "levels": Param(increasing_inside_unit, vector=True, shared=True),
        "values": Param(nonnegative_nondecreasing, vector=True),
        "point": Param(nonnegative, required=False),
    }

    def _validate(self) -> None:
        lv, v = self._args["levels"], self._args["values"]
        k = v.shape[1]
        if k < 1 or lv.shape[-1] != k:
            raise ParameterError(
                f"quantile: levels {lv.shape} do not fit values {v.shape} (need {k} levels)"
            )
        if not (v[:, -1] > 0).all():
            raise ParameterError("quantile: the last value must be > 0 (the tail's scale)")

    # ----- knots --------------------------------------------------------------------------

    @cached
    def _levels(self) -> FloatArray:
        """The knots' levels with ``tau_0 = 0`` in front: (1, K+1) when shared, else (n, K+1)."""
        lv = self._args["levels"]
        grid = lv[None, :] if lv.ndim == 1 else lv
        return np.concatenate([np.zeros((grid.shape[0], 1)), grid], axis=1)

    @cached_rows
    def knots(self) -> FloatArray:
        """The knots' values with ``v_0 = 0`` in front, (n, K+1)."""
        v = self._args["values"]
        return np.concatenate([np.zeros((v.shape[0], 1)), v], axis=1)

    @cached_rows
    def beta(self) -> FloatArray:
        """The tail's mean excess beyond the last value, (n,), > 0."""
        v = self.knots
        lv = np.broadcast_to(self._levels, v.shape)
        top = v[:, -1:]
        j = (v < top).sum(axis=1, keepdims=True) - 1  # the last knot below v_K (v_0 = 0 is)
        slope = (top - gather_rows(v, j)) / (lv[:, -1:] - gather_rows(lv, j))
        return ((1.0 - lv[:, -1:]) * slope)[:, 0]

    def params(self) -> dict[str, FloatArray]:
        out = {"levels": self._args["levels"], "values": self._args["values"]}
        if "point" in self._args:
            out["point"] = self._args["point"]
        return out

    def point(self) -> FloatArray:
        """The model's own point when it gave one (``point``), else the mean."""
        given = self._args.get("point")
        return given if given is not None else self.mean()

    def atom(self) -> FloatArray:
        """``tau_m`` of the last knot whose value is 0 (``tau_0 = 0``: no atom)."""
        m = (self.knots <= 0).sum(axis=1, keepdims=True) - 1
        return gather_rows(self._levels, m)[:, 0]

    def atoms(self) -> tuple[FloatArray, FloatArray]:
        """One entry per segment ``[v_j, v_{j+1}]``, (n, K): at ``v_j``, with the segment's
        mass where it is flat (an atom), else 0. Entries of one run of equal values share a
        position; at 0 they sum to :meth:`atom`."""
        v = self.knots
        gaps = np.diff(np.broadcast_to(self._levels, v.shape), axis=1)
        return v[:, :-1].copy(), np.where(v[:, 1:] == v[:, :-1], gaps, 0.0)

    # ----- moments ------------------------------------------------------------------------

    def _pieces(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Mass, mean and variance of each piece, (n, K+1): the K segments, then the tail."""
        v = self.knots
        lv = np.broadcast_to(self._levels, v.shape)
        beta = self.beta[:, None]
        top = v[:, -1:]
        with np.errstate(over="ignore"):
            mass = np.concatenate([np.diff(lv, axis=1), 1.0 - lv[:, -1:]], axis=1)
            mid = np.concatenate([0.5 * v[:, :-1] + 0.5 * v[:, 1:], top + beta], axis=1)
            var = np.concatenate([np.diff(v, axis=1) ** 2 / 12.0, beta**2], axis=1)
        return mass, mid, var

    def mean(self) -> FloatArray:
        mass, mid, _ = self._pieces()
        with np.errstate(over="ignore"):
            return (mass * mid).sum(axis=1)

    def variance(self) -> FloatArray:
        mass, mid, var = self._pieces()
        with np.errstate(over="ignore", invalid="ignore"):
            mean = (mass * mid).sum(axis=1, keepdims=True)
            return (mass * ((mid - mean) ** 2 + var)).sum(axis=1)

    # ----- kernels ------------------------------------------------------------------------

    def _segment_of(self, t: FloatArray) -> IntArray:
        """The last knot at or below each ``t >= 0``, (rows, m), in 0..K (K: the tail)."""
        v = self.knots
        return ((v[:, None, :] <= t[:, :, None]).sum(axis=2) - 1).astype(np.intp)

    def _locate(self, t: FloatArray) -> tuple[FloatArray, ...]:
        """Per point: its knot's level and value, the next knot's, and whether in the tail."""
        k = self.knots.shape[1] - 1
        j = self._segment_of(t)
        nxt = np.minimum(j + 1, k)
        lv = self._levels
        return (
            gather_rows(lv, j),
            gather_rows(self.knots, j),
            gather_rows(lv, nxt),
            gather_rows(self.knots, nxt),
            j == k,
        )

    def cdf_pdf(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        tau_a, a, tau_b, b, tail = self._locate(t)
        beta = self.beta[:, None]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            frac = np.clip((t - a) / (b - a), 0.0, 1.0)
            inner = np.minimum(tau_a + (tau_b - tau_a) * frac, tau_b)
            excess = (t - a) / beta
            rest = 1.0 - tau_a
            cdf = np.where(tail, 1.0 - rest * np.exp(-excess), inner)
            pdf = np.where(tail, rest / beta * np.exp(-excess), (tau_b - tau_a) / (b - a))
        return cdf, pdf

    def _log_prob(self, t: FloatArray) -> FloatArray:
        tau_a, a, tau_b, b, tail = self._locate(t)
        beta = self.beta[:, None]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inner = np.log(tau_b - tau_a) - np.log(b - a)
            out = np.where(tail, np.log1p(-tau_a) - np.log(beta) - (t - a) / beta, inner)
            atom = self.atom()[:, None]
            return np.where((t <= 0) & (atom > 0), np.log(atom), out)

    def _icdf(self, q: FloatArray) -> FloatArray:
        lv = self._levels
        k = lv.shape[1] - 1
        # The segment [tau_j, tau_{j+1}] holding q (levels at or below q, less tau_0).
        if lv.shape[0] == 1:
            j = np.searchsorted(lv[0, 1:], q, side="right").astype(np.intp)
        else:
            j = (lv[:, None, 1:] <= q[:, :, None]).sum(axis=2).astype(np.intp)
        j = np.minimum(j, k)
        nxt = np.minimum(j + 1, k)
        tau_a, tau_b = gather_rows(lv, j), gather_rows(lv, nxt)
        a, b = gather_rows(self.knots, j), gather_rows(self.knots, nxt)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            frac = np.where(tau_b > tau_a, (q - tau_a) / (tau_b - tau_a), 0.0)
            inner = a + (b - a) * np.clip(frac, 0.0, 1.0)
            depth = np.maximum(np.log1p(-tau_a) - np.log1p(-q), 0.0)
            tail = a + self.beta[:, None] * depth
        return np.where(j == k, tail, inner)
