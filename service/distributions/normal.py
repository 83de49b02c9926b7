"""Normal: a Gaussian censored at 0, for regression baselines with a fitted spread.

    T = max(X, 0),  X ~ N(loc, scale**2)

Parameters, per row (seconds): ``loc`` (n,) and ``scale`` (n,) > 0. A regression
predicts X on the whole real line, but watch time cannot be negative, so the mass
X puts below zero is served as an atom ``P(T == 0) = Phi(-loc/scale)`` rather than
thrown away (truncation would inflate every other probability). For ``t > 0`` the
density is the normal one; ``log_prob(0)`` is the log of the atom mass.

Mean: the exact ``E[max(X, 0)]``, atom included. Point: ``max(loc, 0)``, the
regression's restored prediction clipped to the support (the two differ: censoring
raises the mean above ``loc`` whenever the atom is not negligible).

Numerics: with ``a = loc/scale`` and ``b = -a``, the censored variable is a mixture
of the atom (mass ``Phi(b)``) and a normal left-truncated at ``b`` standard units
(mass ``Phi(a)``), so both moments are sums of non-negative terms. The truncated
normal's mean shift ``M(b) - b`` and variance factor ``1 - M(b)(M(b) - b)`` (``M``
the inverse Mills ratio) cancel badly for large ``b`` and are taken from their
asymptotic series there. Quantiles are closed form: ``loc + scale * ndtri(q)`` above
the atom, 0 at or below it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from service.distributions.arrays import FloatArray
from service.distributions.base import Distribution
from service.distributions.cache import cached_rows
from service.distributions.constraints import positive, real
from service.distributions.params import Arg, Param
from service.distributions.special import (
    log_ndtr,
    mills_ratio,
    ndtr,
    ndtri,
    norm_logpdf,
    norm_pdf,
    trunc_mean_shift,
    trunc_var_factor,
)

_TINY = float(np.finfo(np.float64).tiny)


def _huge_z() -> np.errstate:
    """Silence the special functions' overflow on standardized values far beyond +-40.

    A tiny scale turns ordinary times into z of 1e12 and more; the special functions
    saturate correctly there (0, 1, or -inf in log space) but may overflow in
    intermediate branches they then discard.
    """
    return np.errstate(over="ignore", invalid="ignore", under="ignore")


class Normal(Distribution):
    """Gaussian censored at zero: an atom at 0 plus the normal density on (0, inf)."""

    family: ClassVar[str] = "normal"
    arg_constraints: ClassVar[Mapping[str, Param]] = {
        "loc": Param(real),
        "scale": Param(positive),
    }

    loc = Arg()
    scale = Arg()

    @cached_rows
    def p0(self) -> FloatArray:
        """The mass X puts below zero, served as the atom at 0."""
        with _huge_z():
            return ndtr(-self.loc / self.scale)

    def params(self) -> dict[str, FloatArray]:
        return {"loc": self.loc, "scale": self.scale}

    def atom(self) -> FloatArray:
        return self.p0

    def point(self) -> FloatArray:
        """The regression's own prediction, ``max(loc, 0)`` (not E[T])."""
        return np.maximum(self.loc, 0.0)

    def _positive_part(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """P(X > 0), and the mean and variance of X given X > 0."""
        with _huge_z():
            b = -self.loc / self.scale
            p_pos = ndtr(-b)
            shift = trunc_mean_shift(b)
            # For b < 0 (loc > 0) loc + scale*M(b) keeps loc's digits; scale*(M(b) - b)
            # is the cancellation-free form where b is large.
            near = self.loc + self.scale * mills_ratio(np.minimum(b, 0.0))
            cond_mean = np.where(b < 0, near, self.scale * shift)
            cond_var = self.scale**2 * trunc_var_factor(b, shift)
        return p_pos, cond_mean, cond_var

    def mean(self) -> FloatArray:
        p_pos, cond_mean, _ = self._positive_part()
        with np.errstate(under="ignore"):
            return p_pos * cond_mean

    def variance(self) -> FloatArray:
        # Law of total variance over {T == 0} and {T > 0}: every term is >= 0.
        p_pos, cond_mean, cond_var = self._positive_part()
        with np.errstate(under="ignore", over="ignore"):
            return p_pos * cond_var + p_pos * self.p0 * cond_mean**2

    def cdf_pdf(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        with _huge_z():
            z = (t - self.loc[:, None]) / self.scale[:, None]
            return ndtr(z), norm_pdf(z) / self.scale[:, None]

    def _log_prob(self, t: FloatArray) -> FloatArray:
        # Only a log density beyond the double range (scale ~1e-300) overflows, to -inf.
        with _huge_z():
            z = (t - self.loc[:, None]) / self.scale[:, None]
            dens = norm_logpdf(z) - np.log(self.scale)[:, None]
            at_atom = log_ndtr(-self.loc / self.scale)[:, None]
        return np.where(t == 0, at_atom, dens)

    def _icdf(self, q: FloatArray) -> FloatArray:
        above = q > self.p0[:, None]
        # Levels at or below the atom are answered by 0 and kept away from ndtri's poles;
        # subnormal levels are raised to the smallest normal double, where ndtri is exact
        # (the quantile moves by under 0.6 scale, the CDF by under 1e-307).
        z = ndtri(np.where(above, np.maximum(q, _TINY), 0.5))
        with np.errstate(invalid="ignore", over="ignore"):
            x = self.loc[:, None] + self.scale[:, None] * z
        return np.where(above, np.maximum(x, 0.0), 0.0)
