"""``d2q``: duration-deconfounded quantile regression, served as a quantile function.

D2Q (Zhan et al., KDD 2022) splits videos into equal-frequency duration groups, turns each
label into its quantile level among its group's watch times, regresses that level, and maps
a predicted level back to seconds through the group's watch-time quantile function. Here
several heads predict the conditional quantiles of that level at ``LEVELS`` (pinball loss),
and each is mapped back through the row's group: the conditional quantiles of the watch
time itself, since the group's quantile function is non-decreasing. The graph does all of
it, the group lookup included, and emits the ``quantile`` family's parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from model_export.models.baseline import BaselineModel, per_row

LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""The heads' levels: 0.05, 0.10, ..., 0.95 (the median among them is the point)."""

TABLE_POINTS = 1001
"""Levels 0, 0.001, ..., 1 at which each group's watch-time quantile function is tabulated."""

MIN_TOP_S = 1e-3
"""Floor of the top head's value: the quantile family needs a last value above 0."""


class DurationGroups:
    """D2Q's duration groups and, per group, the sorted training labels.

    Group 0 holds rows with an unknown duration (missing, NaN or 0 ms, as the feature schema
    treats them); groups 1..G split known durations at the training days' quantiles, so each
    holds about the same number of training rows. A negative duration counts as 0 ms and
    falls in group 1, as the feature's ``log1p(max(x, 0))`` sees it. The cuts lie half-way
    between whole milliseconds (``ceil(q) - 0.5`` for a training quantile ``q``): durations
    are whole milliseconds, so the groups are those of the cuts ``q`` themselves, and no
    duration sits on a cut, where the graph's float32 comparison might decide otherwise.
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
        cuts = np.unique(np.ceil(inner) - 0.5)
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
        known = np.isfinite(d) & (d != 0)
        g = np.searchsorted(self.cuts, np.where(known, np.maximum(d, 0.0), 0.0), side="right") + 1
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

    def table(self, points: int = TABLE_POINTS) -> np.ndarray:
        """Each group's quantile function (Hazen, as :meth:`quantile`) at ``points`` evenly
        spaced levels from 0 to 1, (G+2, points); a group without training labels gets the
        pooled labels' function."""
        grid = np.linspace(0.0, 1.0, points)
        pooled = np.sort(np.concatenate(self.labels))
        rows = [
            np.quantile(ref if ref.size else pooled, grid, method="hazen") for ref in self.labels
        ]
        return np.stack(rows)

    def state(self) -> dict[str, list[float] | list[list[float]]]:
        """Plain lists for a checkpoint."""
        return {"cuts": self.cuts.tolist(), "labels": [v.tolist() for v in self.labels]}

    @classmethod
    def from_state(cls, state: dict[str, list[float] | list[list[float]]]) -> DurationGroups:
        """Inverse of :meth:`state`."""
        return cls(np.asarray(state["cuts"]), [np.asarray(v) for v in state["labels"]])


def pinball(level: torch.Tensor, target: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of predicted levels (n, K) at ``taus`` (K,) against ``target`` (n,)."""
    u = target.unsqueeze(1) - level
    return torch.maximum(taus * u, (taus - 1.0) * u).mean()


def running_max(x: torch.Tensor) -> torch.Tensor:
    """``max(x_1, ..., x_k)`` along dim 1, unrolled so that it exports to plain ONNX ops."""
    cols = [x[:, 0]]
    for k in range(1, x.shape[1]):
        cols.append(torch.maximum(cols[-1], x[:, k]))
    return torch.stack(cols, dim=1)


class DurationQuantile(BaselineModel):
    """``d2q``: quantiles of the label's level within its duration group, mapped back to seconds.

    Head: K outputs ``r``; the levels' logits are ``r_1, r_1 + softplus(r_2), ...`` (cumulated
    softplus increments), so the predicted levels ``sigmoid(.)`` rise with the head's level by
    construction. Loss: the mean pinball loss at ``LEVELS`` against the level the label holds
    among its group's training labels (:class:`DurationGroups`). Served: each level through
    the row's group's tabulated quantile function (linear between the table's levels), a
    running maximum against float32 rounding, the top value floored at ``MIN_TOP_S``; the point
    is the value of the 0.5 head, D2Q's mapping of its predicted (median) level.

    The row's group is computed in the graph from the encoded ``duration_ms`` column and its
    missing indicator; :meth:`forward` appends it to the head's outputs as a last column, so
    that the loss, :meth:`served` and :meth:`restore` see the raw output alone, as for every
    head.
    """

    name = "d2q"
    family = "quantile"

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        table: np.ndarray | None = None,
        cuts_z: Sequence[float] = (),
        duration_column: int = 0,
        missing_column: int | None = None,
        levels: Sequence[float] = LEVELS,
        **kw: object,
    ) -> None:
        super().__init__(cardinalities, numeric_width, len(levels), **kw)  # type: ignore[arg-type]
        if 0.5 not in levels:
            raise ValueError("d2q's levels must include the median, its point")
        tab = np.zeros((len(cuts_z) + 2, TABLE_POINTS)) if table is None else table
        if tab.shape[0] != len(cuts_z) + 2:
            raise ValueError(f"table of {tab.shape[0]} groups for {len(cuts_z)} cuts")
        self.register_buffer("levels", torch.tensor(list(levels), dtype=torch.float32))
        self.register_buffer("table_s", torch.tensor(np.asarray(tab), dtype=torch.float32))
        self.register_buffer("cuts_z", torch.tensor(list(cuts_z), dtype=torch.float32))
        self.duration_column = duration_column
        self.missing_column = missing_column
        self.median_index = list(levels).index(0.5)
        self.nominal_levels = [float(v) for v in levels]

    def group_of(self, numeric: torch.Tensor) -> torch.Tensor:
        """Each row's duration group (0 = unknown), as a float column (n,)."""
        cuts: torch.Tensor = self.cuts_z  # type: ignore[assignment]
        z = numeric[:, self.duration_column : self.duration_column + 1]
        above = (z >= cuts.unsqueeze(0)).to(numeric.dtype).sum(dim=1) + 1.0
        if self.missing_column is None:
            return above
        missing = numeric[:, self.missing_column] > 0.5
        return torch.where(missing, torch.zeros_like(above), above)

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """Raw head outputs (n, K) and the row's duration group as a last column."""
        raw = super().forward(categorical, numeric)
        return torch.cat([raw, self.group_of(numeric).to(raw.dtype).unsqueeze(1)], dim=1)

    def level_heads(self, raw: torch.Tensor) -> torch.Tensor:
        """Predicted quantile levels within the duration group, (n, K), rising along K."""
        r = raw[:, : self.levels.shape[0]]  # type: ignore[union-attr]
        logits = torch.cumsum(torch.cat([r[:, :1], F.softplus(r[:, 1:])], dim=1), dim=1)
        return torch.sigmoid(logits)

    def level(self, raw: torch.Tensor) -> torch.Tensor:
        """The predicted median level within the duration group (D2Q's prediction), (n,)."""
        return self.level_heads(raw)[:, self.median_index]

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y`` here is the target level, not the watch time."""
        taus: torch.Tensor = self.levels  # type: ignore[assignment]
        return pinball(self.level_heads(raw), y, taus.to(raw.dtype))

    def seconds(self, raw: torch.Tensor) -> torch.Tensor:
        """The heads' levels through the row's group's quantile table, (n, K), in seconds."""
        table: torch.Tensor = self.table_s  # type: ignore[assignment]
        points = table.shape[1]
        level = self.level_heads(raw)
        group = raw[:, -1:].to(torch.int64)
        pos = level * (points - 1)
        lower = torch.clamp(torch.floor(pos), 0, points - 2)
        frac = pos - lower
        flat = table.to(raw.dtype).reshape(-1)
        index = group * points + lower.to(torch.int64)
        a = flat[index]
        b = flat[index + 1]
        values = running_max(a + frac * (b - a))
        floor = torch.full_like(values[:, -1:], MIN_TOP_S)
        return torch.cat([values[:, :-1], torch.maximum(values[:, -1:], floor)], dim=1)

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        return self.seconds(raw)[:, self.median_index]

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = self.seconds(raw)
        levels: torch.Tensor = self.levels  # type: ignore[assignment]
        return per_row(levels.to(raw.dtype), raw), values, values[:, self.median_index]

    def output_names(self) -> list[str]:
        return ["levels", "values", "point"]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {
            "levels": self.nominal_levels,
            "n_duration_groups": float(self.table_s.shape[0]),  # type: ignore[union-attr, index]
            "table_points": float(TABLE_POINTS),
            "loss": "mean pinball loss of the within-group level at each head's level",
            "point_s": "the duration group's watch-time quantile at the predicted median level "
            "(the 0.5 head), D2Q's mapping of its prediction",
        }
