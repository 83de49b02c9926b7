"""Exponential, for weighted-logistic-regression baselines.

    p(t) = rate * exp(-rate * t),  t >= 0

Parameter, per row: ``rate`` (n,) > 0, in 1/s. Weighted logistic regression learns
odds that estimate the expected watch time, so its exporter emits ``rate = 1/odds``;
the exponential is the maximum-entropy law on [0, inf) with that mean.

Mean: ``1/rate``. Point: the mean (the odds the regression restores). Standard
deviation: ``1/rate`` as well, taken directly so it stays finite where its square
would overflow. Every kernel is written with ``expm1``/``log1p`` so that a rate near
0 (the CDF is then ``rate * t`` to full precision) and a huge rate behave. Quantiles
are closed form: ``-log1p(-q) / rate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from service.distributions.arrays import FloatArray
from service.distributions.base import Distribution
from service.distributions.constraints import positive
from service.distributions.params import Arg, Param


class Exponential(Distribution):
    """Exponential watch time with a per-row rate."""

    family: ClassVar[str] = "exponential"
    arg_constraints: ClassVar[Mapping[str, Param]] = {"rate": Param(positive)}

    rate = Arg()

    def params(self) -> dict[str, FloatArray]:
        return {"rate": self.rate}

    def mean(self) -> FloatArray:
        with np.errstate(over="ignore"):
            return 1.0 / self.rate

    def variance(self) -> FloatArray:
        with np.errstate(over="ignore"):
            return self.mean() ** 2

    def stddev(self) -> FloatArray:
        return self.mean()

    def cdf_pdf(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        rate = self.rate[:, None]
        with np.errstate(under="ignore", over="ignore"):
            x = rate * t
            return -np.expm1(-x), rate * np.exp(-x)

    def _log_prob(self, t: FloatArray) -> FloatArray:
        with np.errstate(over="ignore"):
            return np.log(self.rate)[:, None] - self.rate[:, None] * t

    def _icdf(self, q: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", over="ignore"):
            return -np.log1p(-q) / self.rate[:, None]
