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


def bucket_index(edges_s: torch.Tensor, y: torch.Tensor, label_scale: float) -> torch.Tensor:
    """The histogram family's bucket of labels ``y`` in scaled units: the number of interior
    edges at or below the label."""
    return torch.searchsorted(edges_s[1:-1] / label_scale, y.contiguous(), right=True)


def bucket_midpoints(edges_s: torch.Tensor) -> torch.Tensor:
    """Each bucket's midpoint in seconds (the open last bucket's nominal one)."""
    return 0.5 * (edges_s[1:] + edges_s[:-1])


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
        return bucket_index(edges, y, self.label_scale)

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(raw, self.bucket_of(y))

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        return (torch.softmax(raw, dim=1) * bucket_midpoints(edges)).sum(dim=1)

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        return torch.softmax(raw, dim=1), per_row(edges, raw)

    def output_names(self) -> list[str]:
        return ["probs", "edges"]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {"edges_s": [float(v) for v in self.edges_s]}  # type: ignore[union-attr]
