"""The interface every watch-time family shares, and the batch shape rules.

Ranking asks the same questions of every model (expected watch time, quick-skip
probability, interval masses, quantiles), so each family only supplies its closed
forms and the batch plumbing lives here once. Method names follow
``torch.distributions`` / ``scipy.stats`` so the code reads the same on both sides of
the export.

Shape rules, for a distribution over ``n`` rows:

* ``t`` / ``levels``: a scalar gives ``(n,)``; a 1-D array ``(m,)`` is shared by all
  rows and gives ``(n, m)``; a 2-D array ``(n, m)`` is per row and gives ``(n, m)``.
  (A per-row scalar is therefore passed as ``(n, 1)``.)
* ``edges``: ``(m, 2)`` shared or ``(n, m, 2)`` per row; ``hi`` may be ``inf``.
* ``threshold`` of ``quick_skip_prob``: a scalar or ``(n,)``.

Served distributions live on ``[0, inf)``. Some carry an atom at exactly 0 s; the
mass of an interval ``[lo, hi]`` is ``F(hi) - F(lo)`` for ``lo > 0`` and ``F(hi)`` for
``lo <= 0``, so the first interval of a partition of ``[0, inf)`` holds the atom and
the masses of a partition always sum to 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from service.distributions.arrays import Float32Array, FloatArray
from service.distributions.cache import carried
from service.distributions.params import Param, check_args, parse_params
from service.distributions.rootfind import solve_quantiles


class Distribution(ABC):
    """A batch of ``n`` watch-time distributions of one family, one per row.

    A family declares its parameters once, in :attr:`arg_constraints`; the constructor
    parses and checks whatever a model emits against it (``Family(**params)``), and
    :attr:`required_params`, :attr:`optional_params` and the rows :meth:`take` slices
    are derived from it. What a family derives from its parameters is held in
    :mod:`~service.distributions.cache` values, never set in a constructor of its own.
    """

    family: ClassVar[str]
    #: every parameter, by the name a model's output carries: shape, presence, constraint
    arg_constraints: ClassVar[Mapping[str, Param]]
    #: derived from arg_constraints: names a model must emit, then those it may emit
    required_params: ClassVar[tuple[str, ...]] = ()
    optional_params: ClassVar[tuple[str, ...]] = ()
    #: derived from the class: the per-row cached values :meth:`take` gathers for a child
    _carried: ClassVar[tuple[str, ...]] = ()

    #: how :mod:`~service.distributions.curve` draws the density on a grid: "point" (the
    #: density at each time; smooth families) or "step" (each cell's mass over its width;
    #: families whose density is constant between bucket edges or knots)
    curve_density: ClassVar[str] = "point"

    #: whether :meth:`cdf_pdf32` exists, to sharpen quantile starts in float32
    has_float32_kernel: ClassVar[bool] = False
    #: whether :meth:`cdf_pdf_dpdf32` exists too, for Halley's steps in place of Newton's
    has_float32_slope: ClassVar[bool] = False

    n: int
    #: the parameters as parsed, by declared name
    _args: dict[str, FloatArray]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared: Mapping[str, Param] = getattr(cls, "arg_constraints", {})
        cls.required_params = tuple(name for name, p in declared.items() if p.required)
        cls.optional_params = tuple(name for name, p in declared.items() if not p.required)
        cls._carried = carried(cls)
        check_args(cls, declared)

    def __init__(self, **params: npt.ArrayLike) -> None:
        self._args, self.n = parse_params(self.family, self.arg_constraints, params)
        self._validate()

    @classmethod
    def from_params(cls, params: Mapping[str, npt.ArrayLike]) -> Self:
        """Build from a dict of per-row parameter arrays (the model's outputs)."""
        return cls(**params)

    def _validate(self) -> None:
        """What the declaration cannot say: how the parameters' lengths relate, and
        conditions across parameters. Raises :class:`ParameterError`."""
        return

    def take(self, rows: npt.ArrayLike) -> Self:
        """The same family restricted to ``rows``, an index array (repeats allowed).

        The distribution the constructor builds from the rows of the parameters, bit for
        bit, by a shorter path: every constraint holds row by row, so rows of valid
        parameters are not checked again, and the per-row cached values the parent has
        already computed (:func:`~service.distributions.cache.cached_rows`) are gathered
        instead of derived again. Other cached values stay behind; the child derives its
        own when asked.
        """
        index = np.asarray(rows)
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise TypeError(f"rows must be a 1-D integer array, got {index.dtype} {index.shape}")
        new = object.__new__(type(self))
        declared = self.arg_constraints
        new._args = {
            name: value[index] if declared[name].per_row(value) else value
            for name, value in self._args.items()
        }
        new.n = int(index.shape[0])
        state = self.__dict__
        for name in self._carried:
            if name in state:
                new.__dict__[name] = state[name][index]
        return new

    @abstractmethod
    def params(self) -> dict[str, FloatArray]:
        """The parameters of exactly the distribution served, per row."""

    # ----- moments and points -------------------------------------------------------

    @abstractmethod
    def mean(self) -> FloatArray:
        """Exact E[T] per row, in seconds."""

    @abstractmethod
    def variance(self) -> FloatArray:
        """Var[T] per row."""

    def stddev(self) -> FloatArray:
        return np.sqrt(np.maximum(self.variance(), 0.0))

    def point(self) -> FloatArray:
        """The model's own point prediction (what its paper evaluates); the mean by default."""
        return self.mean()

    def atom(self) -> FloatArray:
        """P(T == 0) per row; zero for purely continuous families."""
        return np.zeros(self.n)

    def atoms(self) -> tuple[FloatArray, FloatArray]:
        """Every point mass per row: positions (seconds) and masses, both (n, A).

        The atom at 0 (:meth:`atom`) by default, with mass 0 in rows that have none.
        """
        return np.zeros((self.n, 1)), self.atom()[:, None]

    # ----- family kernels -----------------------------------------------------------
    # Public for the quantile search (:mod:`~service.distributions.rootfind`), which needs
    # no more of a family than these. They take finite ``t >= 0`` only, with no shape
    # handling: the batch API below is what callers outside the package use.

    @abstractmethod
    def cdf_pdf(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        """CDF and density at finite ``t >= 0``; ``t`` is ``(n, m)`` or ``(1, m)``.

        At ``t == 0`` the CDF includes the atom, and the density is the continuous
        part's. The result may be ``(1, m)``-broadcast only if every row agrees.
        """

    def cdf_pdf32(self, t: Float32Array) -> tuple[Float32Array, Float32Array]:
        """:meth:`cdf_pdf` in float32, to about 1e-6: only ever a start for the search."""
        raise NotImplementedError(f"{self.family} has no float32 kernel")

    def cdf_pdf_dpdf32(self, t: Float32Array) -> tuple[Float32Array, Float32Array, Float32Array]:
        """:meth:`cdf_pdf32` and the density's derivative: the start's Halley steps."""
        raise NotImplementedError(f"{self.family} has no float32 slope kernel")

    def upper_guess(self) -> FloatArray:
        """A per-row point expected to lie above the high quantiles (a bracket start)."""
        return self.mean() + 10.0 * self.stddev() + 1.0

    def _cdf(self, t: FloatArray) -> FloatArray:
        return self.cdf_pdf(t)[0]

    @abstractmethod
    def _log_prob(self, t: FloatArray) -> FloatArray:
        """log density at finite ``t >= 0`` (log of the atom mass at 0 when there is one)."""

    def _icdf(self, q: FloatArray) -> FloatArray:
        """Quantiles for levels ``q`` in ``[0, 1]``, ``(n, m)``; root finding unless overridden."""
        return solve_quantiles(self, q)

    # ----- public batch API -----------------------------------------------------------

    def _points(self, t: npt.ArrayLike, what: str) -> tuple[FloatArray, bool]:
        arr = np.asarray(t, dtype=np.float64)
        if arr.ndim == 0:
            return arr.reshape(1, 1), True
        if arr.ndim == 1:
            return arr.reshape(1, -1), False
        if arr.ndim == 2 and arr.shape[0] == self.n:
            return arr, False
        raise ValueError(f"{what} must be a scalar, (m,) or ({self.n}, m); got {arr.shape}")

    def _shape_out(self, out: FloatArray, pts: FloatArray, scalar: bool) -> FloatArray:
        out = np.broadcast_to(out, (self.n, pts.shape[1]))
        return np.ascontiguousarray(out[:, 0] if scalar else out)

    def _cdf_grid(self, pts: FloatArray) -> FloatArray:
        """CDF on a ``(1, m)`` or ``(n, m)`` grid of any real points, as ``(n, m)``."""
        if np.isnan(pts).any():
            raise ValueError("t holds NaN")
        if pts.shape[0] == 1 and self.n:
            # Shared points (interval edges): infinity, a common edge, needs no kernel pass,
            # and nothing lies below 0. (At 0 the kernel's own value keeps the CDF monotone
            # with its rounding just above 0.)
            inside = np.flatnonzero((pts[0] >= 0) & np.isfinite(pts[0]))
            out = np.empty((self.n, pts.shape[1]))
            out[:] = np.where(pts == np.inf, 1.0, 0.0)
            if inside.size:
                at = self._cdf(pts[:, inside])
                out[:, inside] = np.clip(np.broadcast_to(at, (self.n, inside.size)), 0.0, 1.0)
            return out
        inner = np.where((pts > 0) & np.isfinite(pts), pts, 0.0)
        out = self._cdf(inner)
        out = np.where(pts < 0, 0.0, np.where(pts == np.inf, 1.0, out))
        return np.broadcast_to(np.clip(out, 0.0, 1.0), (self.n, pts.shape[1]))

    def cdf(self, t: npt.ArrayLike) -> FloatArray:
        """P(T <= t)."""
        pts, scalar = self._points(t, "t")
        return self._shape_out(self._cdf_grid(pts), pts, scalar)

    def log_prob(self, t: npt.ArrayLike) -> FloatArray:
        """log density (log P(T == 0) at 0 where the family has an atom there)."""
        pts, scalar = self._points(t, "t")
        if np.isnan(pts).any():
            raise ValueError("t holds NaN")
        inner = np.where((pts > 0) & np.isfinite(pts), pts, 0.0)
        out = self._log_prob(inner)
        out = np.where((pts < 0) | np.isinf(pts), -np.inf, out)
        return self._shape_out(out, pts, scalar)

    def quick_skip_prob(self, threshold: npt.ArrayLike) -> FloatArray:
        """P(T <= threshold): the chance the viewer leaves within ``threshold`` seconds."""
        thr = np.asarray(threshold, dtype=np.float64)
        if thr.ndim == 0:
            return self.cdf(thr)
        if thr.shape != (self.n,):
            raise ValueError(f"threshold must be a scalar or ({self.n},), got {thr.shape}")
        return self.cdf(thr[:, None])[:, 0]

    def icdf(self, levels: npt.ArrayLike) -> FloatArray:
        """Quantile function: the smallest t with P(T <= t) >= level."""
        q, scalar = self._points(levels, "levels")
        if np.isnan(q).any() or (q < 0).any() or (q > 1).any():
            raise ValueError("levels must lie in [0, 1]")
        q = np.broadcast_to(q, (self.n, q.shape[1]))
        out = self._icdf(np.ascontiguousarray(q))
        return self._shape_out(out, q, scalar)

    ppf = icdf

    def interval_mass_and_cdf(
        self, edges: npt.ArrayLike, t: float
    ) -> tuple[FloatArray, FloatArray]:
        """``interval_mass(edges)`` for shared ``(m, 2)`` edges and ``cdf(t)``, in one pass.

        Ranking asks for both at once (the quick-skip threshold is usually an edge too), and
        each costs a pass over every component; the values are those of the two methods.
        """
        e = np.asarray(edges, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != 2:
            raise ValueError(f"edges must be (m, 2); got {e.shape}")
        self._check_edges(e, e[None, :, 0], e[None, :, 1])
        masses, at = self._shared_masses(e, np.array([t], dtype=np.float64))
        return masses, np.ascontiguousarray(at[:, 0])

    def _shared_masses(self, e: FloatArray, extra: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Masses of shared ``(m, 2)`` edges and the CDF at ``extra`` points, ``(n, k)``.

        One CDF evaluation per distinct point among both, not two per interval.
        """
        points, inverse = np.unique(np.concatenate([e.ravel(), extra]), return_inverse=True)
        at = self._cdf_grid(points[None, :])
        pairs = at[:, inverse[: e.size].reshape(e.shape)]
        f_lo, f_hi = pairs[:, :, 0], pairs[:, :, 1]
        masses = np.clip(f_hi - np.where(e[None, :, 0] <= 0, 0.0, f_lo), 0.0, 1.0)
        return masses, at[:, inverse[e.size :]]

    @staticmethod
    def _check_edges(e: FloatArray, lo: FloatArray, hi: FloatArray) -> None:
        if np.isnan(e).any() or np.isinf(lo).any():
            raise ValueError("interval edges must be numbers; only hi may be infinite")
        if (lo > hi).any():
            raise ValueError("interval with lo > hi")

    def interval_mass(self, edges: npt.ArrayLike) -> FloatArray:
        """P(lo <= T <= hi) per interval; see the module docstring for the atom at 0."""
        e = np.asarray(edges, dtype=np.float64)
        if e.ndim == 2 and e.shape[1] == 2:
            shared = True
            lo, hi = e[None, :, 0], e[None, :, 1]
        elif e.ndim == 3 and e.shape[0] == self.n and e.shape[2] == 2:
            shared = False
            lo, hi = e[:, :, 0], e[:, :, 1]
        else:
            raise ValueError(f"edges must be (m, 2) or ({self.n}, m, 2); got {e.shape}")
        self._check_edges(e, lo, hi)
        if shared:
            return self._shared_masses(e, np.empty(0))[0]
        m = lo.shape[1]
        both = self._cdf_grid(np.concatenate([lo, hi], axis=1))
        f_lo, f_hi = both[:, :m], both[:, m:]
        return np.clip(f_hi - np.where(lo <= 0, 0.0, f_lo), 0.0, 1.0)
