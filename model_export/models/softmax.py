"""``softmax``: classification over exponentially growing buckets, served as a histogram."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from model_export.models.baseline import BaselineModel, per_row


def exponential_bucket_edges(
    n_buckets: int = 20, first: float = 0.5, top: float = 800.0
) -> list[float]:
    """``[0, first, first*r, ..., top]``: B buckets whose widths grow by a constant ratio.

    The last bucket ``[edges[B-1], edges[B])`` is the open one of the histogram family.
    """
    return [0.0, *np.geomspace(first, top, n_buckets).tolist()]


class BucketSoftmax(BaselineModel):
    """``softmax``: classification over exponentially growing watch-time buckets.

    Cross-entropy on the bucket holding the label (the bucket rule of the histogram family:
    ``j`` = number of interior edges at or below y). Prediction: sum of bucket midpoints
    times probabilities, which is exactly the histogram family's mean.
    """

    name = "softmax"
    family = "histogram"

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        edges_s: Sequence[float] | None = None,
        **kw: object,
    ) -> None:
        edges = list(edges_s) if edges_s is not None else exponential_bucket_edges()
        super().__init__(cardinalities, numeric_width, len(edges) - 1, **kw)  # type: ignore[arg-type]
        self.register_buffer("edges_s", torch.tensor(edges, dtype=torch.float32))

    def bucket_of(self, y: torch.Tensor) -> torch.Tensor:
        """Bucket index of labels in scaled units."""
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        inner = edges[1:-1] / self.label_scale
        return torch.searchsorted(inner, y.contiguous(), right=True)

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(raw, self.bucket_of(y))

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        mid = 0.5 * (edges[1:] + edges[:-1])
        return (torch.softmax(raw, dim=1) * mid).sum(dim=1)

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        return torch.softmax(raw, dim=1), per_row(edges, raw)

    def output_names(self) -> list[str]:
        return ["probs", "edges"]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {"edges_s": [float(v) for v in self.edges_s]}  # type: ignore[union-attr]
