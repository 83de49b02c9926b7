"""Survival: exceedance probabilities at thresholds, for ordinal / CREAD-style baselines.

Parameters: ``thresholds`` shared (M,) or per row (n, M), finite, > 0 and strictly
increasing, and ``sf`` (n, M), the model's ``P(T > t_m)`` in [0, 1]. Independent
per-threshold heads need not come out monotone; the rule applied is the running
minimum along the thresholds, ``S_m = min(sf_1, ..., sf_m)``, which never raises a
probability the model gave and only lowers the ones that contradict an earlier
threshold.

Interpolation, with ``t_0 = 0``:

* ``S(0) = 1``: no atom at zero, the model only speaks of the thresholds.
* Between thresholds ``S`` is linear in ``t``: the mass ``S_{m-1} - S_m`` is uniform
  on ``[t_{m-1}, t_m)``.
* Beyond ``t_M``: ``S(t) = S_M * exp(-(t - t_M) / w)`` with ``w = t_M - t_{M-1}`` the
  last segment's width, an exponential tail whose mean excess is ``w``; it keeps the
  mean finite and the quantiles continuous and unbounded, at the scale the model's
  own grid last resolved.

Mean: ``integral of S = sum_m (t_m - t_{m-1}) (S_{m-1} + S_m) / 2 + S_M * w``, which is
how CREAD restores E[T] from its exceedance probabilities. Point: the mean.

This is exactly a histogram with edges ``[0, t_1, ..., t_M, t_M + 2w]`` and masses
``S_{m-1} - S_m`` and ``S_M`` (its open last bucket has mean excess half its nominal
width, ``w``), so the kernels, moments and closed-form quantiles are the histogram's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from service.distributions.arrays import FloatArray
from service.distributions.cache import cached, cached_rows
from service.distributions.constraints import positive_increasing, unit_interval
from service.distributions.histogram import Histogram
from service.distributions.params import Param, ParameterError


class Survival(Histogram):
    """Monotone exceedance probabilities, linearly interpolated, with an exponential tail."""

    family: ClassVar[str] = "survival"
    arg_constraints: ClassVar[Mapping[str, Param]] = {
        "thresholds": Param(positive_increasing, vector=True, shared=True),
        "sf": Param(unit_interval, vector=True),
    }

    def _validate(self) -> None:
        self._check_grid("thresholds", "sf", 0)
        if not np.isfinite(self._grid).all():
            raise ParameterError("survival: thresholds too large for the tail's nominal end")

    @cached_rows
    def sf(self) -> FloatArray:
        """The exceedance probabilities served: the running minimum of the model's."""
        return np.minimum.accumulate(self._args["sf"], axis=1)

    def _bucket_probs(self) -> FloatArray:
        monotone = self.sf
        n = monotone.shape[0]
        ones, zeros = np.ones((n, 1)), np.zeros((n, 1))
        # 0.0 - d rather than -d, so that empty segments hold +0.0, not -0.0.
        return 0.0 - np.diff(np.concatenate([ones, monotone, zeros], axis=1), axis=1)

    @cached
    def _grid(self) -> FloatArray:
        thr = self._args["thresholds"]
        last_width = thr[..., -1:] - (thr[..., -2:-1] if thr.shape[-1] > 1 else 0.0)
        lead = np.zeros_like(thr[..., :1])
        with np.errstate(over="ignore"):  # refused by _validate
            end = thr[..., -1:] + 2.0 * last_width
        return np.concatenate([lead, thr, end], axis=-1)

    def params(self) -> dict[str, FloatArray]:
        """The thresholds as given (shared or per row) and the monotone ``sf`` served."""
        return {"thresholds": self._args["thresholds"], "sf": self.sf}
