"""ZILN: zero-inflated lognormal, an atom at 0 plus a lognormal for positive times.

    P(T == 0) = p0,   T | T > 0 ~ LogNormal(mu, sigma**2)

Parameters, per row: ``p0`` (n,) in [0, 1), ``mu`` (n,) (log-seconds), ``sigma``
(n,) > 0. About one watch in ten ends at exactly 0 s; the ZILN loss fits that mass
with a classifier head and the positive times with a lognormal, and this family
serves exactly that pair. ``log_prob(0)`` is ``log p0``.

Mean: ``(1 - p0) * exp(mu + sigma**2 / 2)``. Point: the mean, which is what the ZILN
paper predicts. Variance: ``(1 - p0) exp(2 mu + sigma**2) (exp(sigma**2) - 1 + p0)``.

Numerics: both moments are formed in log space, so ``mu + sigma**2 / 2`` is summed
before anything is exponentiated: a large ``sigma`` with a compensating ``mu`` gives
the finite answer instead of ``0 * inf``; only a moment that truly exceeds the
double range comes out as ``inf`` (never NaN). ``exp(sigma**2) - 1 + p0`` is written
as ``exp(sigma**2) * (p0 - (1 - p0) * expm1(-sigma**2))``, a sum of non-negative
terms, so a tiny ``sigma`` keeps its digits. Quantiles are closed form:
``exp(mu + sigma * ndtri((q - p0) / (1 - p0)))`` above the atom (upper levels via
their complement ``(1 - q) / (1 - p0)``), 0 at or below it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from service.distributions.arrays import FloatArray
from service.distributions.base import Distribution
from service.distributions.constraints import half_open_unit_interval, positive, real
from service.distributions.params import Arg, Param
from service.distributions.special import ndtr, ndtri, norm_logpdf

_TINY = float(np.finfo(np.float64).tiny)


class ZILN(Distribution):
    """Zero-inflated lognormal watch time."""

    family: ClassVar[str] = "ziln"
    arg_constraints: ClassVar[Mapping[str, Param]] = {
        "p0": Param(half_open_unit_interval),
        "mu": Param(real),
        "sigma": Param(positive),
    }

    p0 = Arg()
    mu = Arg()
    sigma = Arg()

    def params(self) -> dict[str, FloatArray]:
        return {"p0": self.p0, "mu": self.mu, "sigma": self.sigma}

    def atom(self) -> FloatArray:
        return self.p0

    def mean(self) -> FloatArray:
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(np.log1p(-self.p0) + self.mu + 0.5 * self.sigma**2)

    def _log_variance(self) -> FloatArray:
        s2 = self.sigma**2
        with np.errstate(divide="ignore", over="ignore"):
            excess = self.p0 - (1.0 - self.p0) * np.expm1(-s2)
            return np.log1p(-self.p0) + 2.0 * self.mu + 2.0 * s2 + np.log(excess)

    def variance(self) -> FloatArray:
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(self._log_variance())

    def stddev(self) -> FloatArray:
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(0.5 * self._log_variance())

    def _z(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Standardized log time, and ``t`` with zeros replaced so logs stay finite."""
        pos = t > 0
        safe = np.where(pos, t, 1.0)
        with np.errstate(over="ignore"):
            z = (np.log(safe) - self.mu[:, None]) / self.sigma[:, None]
        return z, safe

    def cdf_pdf(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        z, safe = self._z(t)
        pos = t > 0
        p0 = self.p0[:, None]
        # A tiny sigma gives huge z, where ndtr saturates to 0 or 1 but may overflow in
        # branches it then discards.
        with np.errstate(over="ignore", invalid="ignore"):
            cdf = p0 + (1.0 - p0) * ndtr(z)
        # Formed in log space: for a subnormal t, sigma * t underflows to 0 where the
        # density does too, and the quotient would be 0/0.
        log_scale = np.log(self.sigma)[:, None] + np.log(safe)
        with np.errstate(under="ignore", over="ignore"):
            pdf = (1.0 - p0) * np.exp(norm_logpdf(z) - log_scale)
        return np.where(pos, cdf, p0), np.where(pos, pdf, 0.0)

    def _log_prob(self, t: FloatArray) -> FloatArray:
        z, safe = self._z(t)
        with np.errstate(over="ignore"):
            dens = (
                np.log1p(-self.p0)[:, None]
                + norm_logpdf(z)
                - np.log(self.sigma)[:, None]
                - np.log(safe)
            )
        with np.errstate(divide="ignore"):
            at_atom = np.log(self.p0)[:, None]
        return np.where(t > 0, dens, at_atom)

    def _icdf(self, q: FloatArray) -> FloatArray:
        p0 = self.p0[:, None]
        above = q > p0
        r = np.where(above, (q - p0) / (1.0 - p0), 0.5)
        # Upper levels through their complement (1 - q is exact there), so a level just
        # below 1 cannot round to r == 1 and an infinite quantile.
        upper = r > 0.5
        tail = np.where(upper, (1.0 - q) / (1.0 - p0), r)
        # Subnormal levels are raised to the smallest normal double, where ndtri is exact.
        z = ndtri(np.where(tail > 0, np.clip(tail, _TINY, 1.0), 0.0))
        z = np.where(upper, -z, z)
        with np.errstate(over="ignore", under="ignore"):
            x = np.exp(self.mu[:, None] + self.sigma[:, None] * z)
        return np.where(above, x, 0.0)
