"""``d2q``: duration-deconfounded quantile regression; offline point metrics only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from model_export.models.baseline import BaselineModel


class DurationGroups:
    """D2Q's duration groups and, per group, the sorted training labels.

    Group 0 holds rows with an unknown duration (missing or 0 ms, as the feature schema
    treats them); groups 1..G split known durations at the training days' quantiles, so each
    holds about the same number of training rows.
    """

    def __init__(self, cuts: np.ndarray, labels: list[np.ndarray]) -> None:
        self.cuts = np.asarray(cuts, dtype=np.float64)
        self.labels = [np.sort(np.asarray(v, dtype=np.float64)) for v in labels]

    @classmethod
    def fit(cls, duration_ms: np.ndarray, y: np.ndarray, n_groups: int) -> DurationGroups:
        """Cuts and per-group labels from the training days."""
        d = np.asarray(duration_ms, dtype=np.float64)
        known = np.isfinite(d) & (d > 0)
        inner = np.quantile(d[known], np.arange(1, n_groups) / n_groups)
        cuts = np.unique(inner)
        groups = cls(cuts, [])
        g = groups.group(d)
        groups.labels = [np.sort(y[g == k]) for k in range(len(cuts) + 2)]
        return groups

    @property
    def n_groups(self) -> int:
        """Groups including the unknown-duration one."""
        return len(self.cuts) + 2

    def group(self, duration_ms: np.ndarray) -> np.ndarray:
        """Group index of each row (0 = unknown duration)."""
        d = np.asarray(duration_ms, dtype=np.float64)
        known = np.isfinite(d) & (d > 0)
        g = np.searchsorted(self.cuts, np.where(known, d, 0.0), side="right") + 1
        return np.where(known, g, 0).astype(np.int64)

    def level(self, y: np.ndarray, group: np.ndarray) -> np.ndarray:
        """The label's mid-rank level among its group's training labels, in (0, 1)."""
        out = np.full(y.shape, 0.5)
        for k, ref in enumerate(self.labels):
            rows = group == k
            if not rows.any() or ref.size == 0:
                continue
            below = np.searchsorted(ref, y[rows], side="left")
            upto = np.searchsorted(ref, y[rows], side="right")
            out[rows] = (below + 0.5 * (upto - below)) / ref.size
        return out

    def quantile(self, level: np.ndarray, group: np.ndarray) -> np.ndarray:
        """Map levels back through each group's training quantile function (seconds)."""
        out = np.zeros(level.shape)
        for k, ref in enumerate(self.labels):
            rows = group == k
            if rows.any() and ref.size:
                # Hazen's plotting position (i + 0.5) / n is the inverse of the mid-rank level.
                out[rows] = np.quantile(ref, np.clip(level[rows], 0.0, 1.0), method="hazen")
        return out

    def state(self) -> dict[str, list[float] | list[list[float]]]:
        """Plain lists for a checkpoint."""
        return {"cuts": self.cuts.tolist(), "labels": [v.tolist() for v in self.labels]}

    @classmethod
    def from_state(cls, state: dict[str, list[float] | list[list[float]]]) -> DurationGroups:
        """Inverse of :meth:`state`."""
        return cls(np.asarray(state["cuts"]), [np.asarray(v) for v in state["labels"]])


class DurationQuantile(BaselineModel):
    """``d2q``: regression of the label's quantile level within its duration group (Zhan et al.,
    2022); mapped back through that group's training quantile function.

    The raw output passes a sigmoid (a level in (0, 1)); the loss is MSE against the level the
    label holds among the training labels of its duration group (see :class:`DurationGroups`).
    There is no density: offline point metrics only.
    """

    name = "d2q"
    family = None

    def __init__(self, cardinalities: Sequence[int], numeric_width: int, **kw: object) -> None:
        super().__init__(cardinalities, numeric_width, 1, **kw)  # type: ignore[arg-type]

    def level(self, raw: torch.Tensor) -> torch.Tensor:
        """Predicted quantile level within the duration group."""
        return torch.sigmoid(raw[:, 0])

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y`` here is the target level, not the watch time."""
        return F.mse_loss(self.level(raw), y)

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("d2q maps levels back through its duration groups (numpy)")

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError("d2q is evaluated offline only")

    def output_names(self) -> list[str]:
        return ["level"]
