"""``cread``: ordinal classifiers at error-adaptive split points, served as a survival curve."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from model_export.models.baseline import BaselineModel, per_row


def cread_thresholds(
    y: np.ndarray, n_thresholds: int = 30, alpha: float = 2.0, min_gap: float = 0.1
) -> list[float]:
    """CREAD's error-adaptive split points from the training labels (seconds).

    ``t_m = F^-1(gamma(m / (M + 1)))`` with F the empirical CDF of watch time and
    ``gamma(x) = (1 - exp(-alpha x)) / (1 - exp(-alpha))``: equal-frequency points
    (``alpha -> 0``) keep each classifier's learning error low but leave the long tail in a
    few wide segments (large restoration error); the concave warp moves points into the tail
    to balance the two. Points at 0 s (one label in ten) and closer than ``min_gap`` to the
    previous one are dropped: the survival family needs them > 0 and increasing.
    """
    m = np.arange(1, n_thresholds + 1) / (n_thresholds + 1)
    levels = (1.0 - np.exp(-alpha * m)) / (1.0 - math.exp(-alpha))
    raw = np.quantile(np.asarray(y, dtype=np.float64), levels)
    out: list[float] = []
    for t in raw.tolist():
        if t > 0 and (not out or t - out[-1] >= min_gap):
            out.append(round(float(t), 3))
    return out


def running_min(sf: torch.Tensor) -> torch.Tensor:
    """``min(sf_1, ..., sf_m)`` along dim 1, unrolled so that it exports to plain ONNX ops."""
    cols = [sf[:, 0]]
    for m in range(1, sf.shape[1]):
        cols.append(torch.minimum(cols[-1], sf[:, m]))
    return torch.stack(cols, dim=1)


def survival_mean(sf: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """The survival family's mean: trapezoids between thresholds + the exponential tail.

    ``sum_m (t_m - t_{m-1}) (S_{m-1} + S_m) / 2 + S_M * w`` with ``S_0 = 1``, ``t_0 = 0`` and
    ``w = t_M - t_{M-1}``: CREAD's restoration, written exactly as the served family does.
    """
    lead = torch.ones_like(sf[:, :1])
    s = torch.cat([lead, sf], dim=1)
    t = torch.cat([torch.zeros_like(thresholds[:1]), thresholds])
    width = t[1:] - t[:-1]
    body = (width * 0.5 * (s[:, :-1] + s[:, 1:])).sum(dim=1)
    return body + sf[:, -1] * width[-1]


class CREAD(BaselineModel):
    """``cread``: ordinal classifiers P(T > t_m) at error-adaptive split points (Sun et al., 2024).

    Loss: sum over thresholds of the BCE of ``y > t_m`` + ``monotone_weight`` * sum of
    ``relu(S_{m+1} - S_m)`` (exceedance must fall with t) + ``huber_weight`` * Huber(restored
    mean - y), all in scaled units. Served as the survival family, with the running minimum
    (and a small floor, see :meth:`served_sf`) applied in the graph so the served ``sf`` is
    exactly what the family serves and what :meth:`restore` integrates.
    """

    name = "cread"
    family = "survival"
    floor: ClassVar[float] = 1e-3

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        thresholds_s: Sequence[float] = (1.0, 3.0, 10.0, 30.0),
        monotone_weight: float = 1.0,
        huber_weight: float = 1.0,
        huber_delta: float = 1.0,
        **kw: object,
    ) -> None:
        super().__init__(cardinalities, numeric_width, len(thresholds_s), **kw)  # type: ignore[arg-type]
        self.register_buffer("thresholds_s", torch.tensor(list(thresholds_s), dtype=torch.float32))
        self.monotone_weight = monotone_weight
        self.huber_weight = huber_weight
        self.huber_delta = huber_delta

    def _scaled_thresholds(self) -> torch.Tensor:
        thr: torch.Tensor = self.thresholds_s  # type: ignore[assignment]
        return thr / self.label_scale

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        thr = self._scaled_thresholds()
        target = (y.unsqueeze(1) > thr.unsqueeze(0)).to(raw.dtype)
        bce = F.binary_cross_entropy_with_logits(raw, target, reduction="none").sum(dim=1)
        sf = torch.sigmoid(raw)
        monotone = F.relu(sf[:, 1:] - sf[:, :-1]).sum(dim=1)
        restored = survival_mean(sf, thr)
        huber = F.huber_loss(restored, y, reduction="none", delta=self.huber_delta)
        return (bce + self.monotone_weight * monotone + self.huber_weight * huber).mean()

    def served_sf(self, raw: torch.Tensor) -> torch.Tensor:
        """Monotone exceedance probabilities with a floor that keeps every segment's mass > 0.

        The running minimum makes ``sf`` monotone but may leave a segment with exactly zero
        mass (two equal neighbours, or a float32 sigmoid at 0); a label there would score an
        infinite NLL. A share ``floor`` of a strictly decreasing reference
        ``1 - m / (M + 1)`` is mixed in, which moves no probability by more than ``floor``.
        """
        m = raw.shape[1]
        ref = 1.0 - torch.arange(1, m + 1, dtype=raw.dtype) / (m + 1)
        return (1.0 - self.floor) * running_min(torch.sigmoid(raw)) + self.floor * ref

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        thr: torch.Tensor = self.thresholds_s  # type: ignore[assignment]
        return per_row(thr, raw), self.served_sf(raw)

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        thr: torch.Tensor = self.thresholds_s  # type: ignore[assignment]
        return survival_mean(self.served_sf(raw), thr)

    def output_names(self) -> list[str]:
        return ["thresholds", "sf"]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {
            "thresholds_s": [float(v) for v in self.thresholds_s],  # type: ignore[union-attr]
            "monotone_weight": self.monotone_weight,
            "huber_weight": self.huber_weight,
            "huber_delta_scaled": self.huber_delta,
        }
