"""A distribution drawn on a grid of watch times: density and CDF per row, and its atoms.

What a plot (the ``/inspect`` page, a notebook) needs, computed once for the whole batch:

* ``cdf[r, i]`` is the family's own ``P(T <= t_i)``, exactly what :meth:`Distribution.cdf`
  gives; at ``t_0 = 0`` it is the mass of the atom at 0 (``p0``), where there is one.
* ``atom_at``/``atom_mass`` (n, A): every point mass, by position in seconds. A family with
  ``p0`` has one at 0; the quantile family also has one wherever two consecutive knots are
  equal. Rows without an atom have mass 0 there.
* ``pdf[r, i]`` is drawn as the family says in :attr:`Distribution.curve_density`:

  - ``"point"`` (smooth families: egm, exponential, normal, ziln): the density of the
    continuous part at ``t_i``. Between grid points the density is smooth, so the
    trapezoid rule over the grid approximates ``cdf[i+1] - cdf[i]`` (error O(step**2)). A
    feature narrower than the step (a lognormal's steep rise next to 0, a very narrow
    Gaussian) is undersampled in ``pdf``; ``cdf`` is exact at every point whatever the step.
  - ``"step"`` (bucket families: histogram, survival, quantile, whose density is constant
    inside a bucket or between knots and jumps at the edges): ``pdf[r, i]`` holds on
    ``[t_i, t_{i+1})`` and is the continuous mass of that cell divided by its width,
    ``(cdf[i+1] - cdf[i] - atoms in (t_i, t_{i+1}]) / (t_{i+1} - t_i)``. Rectangles then
    give the CDF's increments exactly; inside a bucket it is the bucket's own density, and
    a cell holding a bucket edge shows the average of the two. The last value is the
    density just right of the last grid point.

Vectorized over rows and points: kernel calls on blocks of the shared grid, never a loop
over rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.distributions.arrays import FloatArray
from service.distributions.base import Distribution

BLOCK_VALUES = 16_384
"""Rows x points of one pass through a family's kernel (its temporaries scale with it)."""

DENSITY_NOTES = {
    "point": (
        "pdf[i] is the density of the continuous part at t_s[i]; atoms are listed apart; "
        "a feature narrower than the grid step is undersampled in pdf, never in cdf"
    ),
    "step": (
        "pdf[i] holds on [t_s[i], t_s[i+1]): the cell's continuous mass over its width "
        "(constant inside a bucket, the average where a bucket edge falls in the cell); "
        "atoms are listed apart"
    ),
}


@dataclass(frozen=True)
class Curve:
    """Per-row density and CDF on a shared grid of times ``t`` (seconds), and the atoms."""

    t: FloatArray
    pdf: FloatArray
    cdf: FloatArray
    atom_at: FloatArray
    atom_mass: FloatArray
    density: str

    def rows(self, start: int, stop: int) -> Curve:
        """Rows ``start:stop`` (views)."""
        return Curve(
            self.t,
            self.pdf[start:stop],
            self.cdf[start:stop],
            self.atom_at[start:stop],
            self.atom_mass[start:stop],
            self.density,
        )

    @classmethod
    def concat(cls, parts: Sequence[Curve]) -> Curve:
        """The rows of several curves of one family on one grid, in order."""
        first = parts[0]
        return cls(
            first.t,
            np.concatenate([p.pdf for p in parts]),
            np.concatenate([p.cdf for p in parts]),
            np.concatenate([p.atom_at for p in parts]),
            np.concatenate([p.atom_mass for p in parts]),
            first.density,
        )


def grid(points: int, max_s: float) -> FloatArray:
    """``points`` evenly spaced times from 0 to ``max_s`` inclusive."""
    return np.linspace(0.0, max_s, points)


def curve(dist: Distribution, t: FloatArray) -> Curve:
    """``dist`` drawn on the grid ``t``: finite, ``t[0] >= 0``, strictly increasing, >= 2."""
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or not np.isfinite(t).all():
        raise ValueError("the grid must be at least two finite times")
    if t[0] < 0 or (np.diff(t) <= 0).any():
        raise ValueError("the grid must start at or above 0 and increase strictly")
    n, p = dist.n, t.size
    at, mass = dist.atoms()
    if n == 0:
        empty = np.empty((0, p))
        return Curve(t, empty, empty.copy(), at, mass, dist.curve_density)
    cdf = np.empty((n, p))
    pdf = np.empty((n, p))
    # A family's kernel holds a few (n, points, components) temporaries: the grid goes
    # through it in blocks of about BLOCK_VALUES rows x points, which bounds them.
    block = max(1, BLOCK_VALUES // n)
    for lo in range(0, p, block):
        part = slice(lo, min(p, lo + block))
        with np.errstate(under="ignore", over="ignore", invalid="ignore", divide="ignore"):
            cdf_raw, pdf_raw = dist.cdf_pdf(t[None, part])
        cdf[:, part] = np.clip(cdf_raw, 0.0, 1.0)
        pdf[:, part] = pdf_raw
    if dist.curve_density == "step":
        increments = np.diff(cdf, axis=1)
        # Atoms inside a cell (t_i, t_{i+1}] are not density: take them out of its mass.
        cell = np.searchsorted(t, at, side="left") - 1
        inside = (cell >= 0) & (cell < p - 1) & (mass > 0)
        if inside.any():
            held = np.zeros((n, p - 1))
            rows = np.broadcast_to(np.arange(n)[:, None], at.shape)
            np.add.at(held, (rows[inside], cell[inside]), mass[inside])
            increments = increments - held
        step = np.maximum(increments, 0.0) / np.diff(t)
        pdf = np.concatenate([step, pdf[:, -1:]], axis=1)
    return Curve(
        t,
        np.maximum(pdf, 0.0),
        cdf,
        at,
        mass,
        dist.curve_density,
    )
