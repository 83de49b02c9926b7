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

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from service.distributions.arrays import FloatArray
from service.distributions.base import ParameterError, as_float
from service.distributions.histogram import Histogram


class Survival(Histogram):
    """Monotone exceedance probabilities, linearly interpolated, with an exponential tail."""

    family: ClassVar[str] = "survival"
    required_params: ClassVar[tuple[str, ...]] = ("thresholds", "sf")
    per_row: ClassVar[tuple[str, ...]] = (*Histogram.per_row, "sf")

    def __init__(self, *, thresholds: npt.ArrayLike, sf: npt.ArrayLike) -> None:
        s = as_float("sf", sf, 2)
        n, m = s.shape
        raw = np.asarray(thresholds, dtype=np.float64)
        shared = raw.ndim == 1
        thr = as_float("thresholds", raw, 1 if shared else 2)
        if m < 1 or thr.shape[-1] != m or (not shared and thr.shape[0] != n):
            raise ParameterError(f"survival: thresholds {thr.shape} do not fit sf {s.shape}")
        if (thr <= 0).any() or (np.diff(thr, axis=-1) <= 0).any():
            raise ParameterError("survival: thresholds must be > 0 and strictly increasing")
        if (s < 0).any() or (s > 1).any():
            raise ParameterError("survival: sf must lie in [0, 1]")
        monotone = np.minimum.accumulate(s, axis=1)
        ones, zeros = np.ones((n, 1)), np.zeros((n, 1))
        # 0.0 - d rather than -d, so that empty segments hold +0.0, not -0.0.
        probs = 0.0 - np.diff(np.concatenate([ones, monotone, zeros], axis=1), axis=1)
        last_width = thr[..., -1:] - (thr[..., -2:-1] if m > 1 else 0.0)
        lead = np.zeros_like(thr[..., :1])
        edges = np.concatenate([lead, thr, thr[..., -1:] + 2.0 * last_width], axis=-1)
        super().__init__(probs=probs, edges=edges)
        self.sf: FloatArray = monotone

    def params(self) -> dict[str, FloatArray]:
        """The thresholds as given (shared or per row) and the monotone ``sf`` served."""
        shared = self.shared_edges
        thresholds = self.edges[:, 1:-1] if shared is None else shared[1:-1]
        return {"thresholds": thresholds, "sf": self.sf}
