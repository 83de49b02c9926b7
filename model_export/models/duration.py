"""Heads that read the row's video duration inside the graph, and the duration groups they use.

A duration-aware head appends two columns to its raw output in :meth:`DurationHead.forward`:
``log1p(duration_ms)`` decoded from the standardized numeric input, and the missing-duration
indicator. :meth:`loss`, :meth:`served` and :meth:`restore` therefore see the duration of every
row, and the exported graph maps each row through its own duration without any change to the
trunk, the exporter or the service. A missing (or 0 ms) duration is encoded as the training
mean of ``log1p``; such rows form a group of their own (group 0).

Duration groups: ``n_groups`` equal-frequency groups of the known training durations, cut at
fixed-size buffers (a checkpoint's shapes never depend on the data), plus the unknown group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model_export.data.features import FittedFeatures
from model_export.models.baseline import BaselineModel
from service.manifest import NumericFeature

DURATION_FEATURE = "duration_ms"


@dataclass(frozen=True)
class DurationInput:
    """Where the duration sits in the numeric tensor and how it was standardized."""

    column: int
    missing_column: int | None
    mean: float
    std: float

    @classmethod
    def from_fitted(cls, fitted: FittedFeatures) -> DurationInput:
        """The KuaiRand schema's ``duration_ms`` column (log1p, standardized, indicator)."""
        spec = next(f for f in fitted.features if f.name == DURATION_FEATURE)
        assert isinstance(spec, NumericFeature) and spec.log1p
        columns = fitted.inputs[1].columns
        missing = columns.index(spec.indicator_name) if spec.missing_indicator else None
        return cls(columns.index(spec.name), missing, float(spec.mean), float(spec.std))


def known_duration(duration_ms: np.ndarray) -> np.ndarray:
    """Rows whose duration is known (finite and > 0 ms, as the feature schema treats it)."""
    d = np.asarray(duration_ms, dtype=np.float64)
    return np.isfinite(d) & (d > 0)


def duration_cuts(duration_ms: np.ndarray, n_groups: int) -> np.ndarray:
    """``n_groups - 1`` inner equal-frequency cuts of the known durations, in log1p(ms)."""
    d = np.asarray(duration_ms, dtype=np.float64)
    log_d = np.unique(np.log1p(d[known_duration(d)]))
    cuts = np.quantile(np.log1p(d[known_duration(d)]), np.arange(1, n_groups) / n_groups)
    # Each cut moves halfway down to the next smaller duration seen: the same rows fall on
    # each side, and a float32 graph decoding a duration from its standardized input lands
    # on the same side as the float64 arithmetic here.
    below = np.searchsorted(log_d, cuts, side="left") - 1
    lower = log_d[np.maximum(below, 0)]
    return np.where(below >= 0, 0.5 * (lower + cuts), cuts)


def group_of_ms(duration_ms: np.ndarray, log_cuts: np.ndarray) -> np.ndarray:
    """Group of each row from raw milliseconds: 0 unknown, 1..G by the cuts (numpy)."""
    d = np.asarray(duration_ms, dtype=np.float64)
    known = known_duration(d)
    log_d = np.log1p(np.where(known, d, 0.0))
    g = 1 + (log_d[:, None] >= np.asarray(log_cuts)[None, :]).sum(axis=1)
    return np.where(known, g, 0).astype(np.int64)


class DurationHead(BaselineModel):
    """A baseline head whose raw output carries ``[..., log1p(duration_ms), missing]``.

    ``n_groups`` known-duration groups (plus group 0) are cut at the buffer ``log_cuts``,
    fitted on the training days by :meth:`fit_training_days`; :meth:`fit_validation_day` is
    the head's post-fit on the validation day (network frozen).
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        out_dim: int,
        duration: DurationInput,
        n_groups: int,
        **kw: object,
    ) -> None:
        super().__init__(cardinalities, numeric_width, out_dim, **kw)  # type: ignore[arg-type]
        self.duration = duration
        self.n_groups = n_groups
        self.register_buffer("log_cuts", torch.zeros(n_groups - 1))

    @property
    def out_dim(self) -> int:
        """Columns of the head itself (the two duration columns excluded)."""
        return int(self.head.out_features)

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        out = self.head(self.trunk(categorical, numeric))
        z = numeric[:, self.duration.column]
        log_d = z * self.duration.std + self.duration.mean
        if self.duration.missing_column is None:
            missing = torch.zeros_like(log_d)
        else:
            missing = numeric[:, self.duration.missing_column]
        cols = torch.stack([log_d, missing], dim=1).to(out.dtype)
        return torch.cat([out, cols], dim=1)

    def log_duration(self, raw: torch.Tensor) -> torch.Tensor:
        """``log1p(duration_ms)`` of each row (the training mean where it is missing)."""
        return raw[:, -2]

    def group(self, raw: torch.Tensor) -> torch.Tensor:
        """Duration group of each row, as :func:`group_of_ms` computes it, inside the graph."""
        cuts: torch.Tensor = self.log_cuts  # type: ignore[assignment]
        log_d = self.log_duration(raw)
        g = 1 + (log_d.unsqueeze(1) >= cuts.to(log_d.dtype).unsqueeze(0)).sum(dim=1)
        return torch.where(raw[:, -1] > 0.5, torch.zeros_like(g), g)

    def fit_training_days(self, duration_ms: np.ndarray, y_s: np.ndarray) -> None:
        """Head constants from the training days' durations and labels (seconds)."""
        cuts = duration_cuts(duration_ms, self.n_groups)
        self.log_cuts.copy_(torch.from_numpy(cuts))  # type: ignore[operator]

    def targets(self, duration_ms: np.ndarray, y_s: np.ndarray) -> torch.Tensor:
        """What the loss takes for these rows: the scaled watch time unless a head says else."""
        return torch.from_numpy(np.asarray(y_s, dtype=np.float32) / self.label_scale)

    def fit_validation_day(self, raw: torch.Tensor, y_s: np.ndarray) -> None:  # noqa: B027
        """Post-fit on the validation day (network frozen); nothing by default."""
