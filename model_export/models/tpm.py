"""``tpm``: tree-based progressive regression (Lin et al., KDD 2023), served as a histogram.

The leaves of a complete binary tree are watch-time buckets at equal-frequency quantiles of
the training labels; each internal node is a binary classifier "upper half of my interval,
given that the label is in my interval". A leaf's probability is the product of the branch
probabilities along its path from the root, so the leaves' probabilities sum to 1 by
construction, and the sum of the BCE losses of the classifiers on a label's path is exactly
``-log`` of its leaf's probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from model_export.models.baseline import BaselineModel, per_row
from model_export.models.softmax import bucket_index, bucket_midpoints


def tpm_edges(y: np.ndarray, n_leaves: int = 16, min_gap: float = 0.1) -> list[float]:
    """Leaf buckets from the training labels (seconds): ``[0, c_1, ..., c_{L-1}, top]``.

    ``c_k`` is the ``k / L`` quantile of ``y``, raised to at least ``c_{k-1} + min_gap``
    (one label in ten is exactly 0 s, so the lowest quantiles coincide; the histogram needs
    increasing edges, and the tree needs all its leaves). The last leaf is open; its nominal
    end ``top`` puts its centre at the mean of the training labels in it
    (``top = 2 * mean - c_{L-1}``), the leaf's value in the expectation.
    """
    y = np.asarray(y, dtype=np.float64)
    cuts: list[float] = []
    prev = 0.0
    for q in np.quantile(y, np.arange(1, n_leaves) / n_leaves).tolist():
        c = round(max(float(q), prev + min_gap), 3)
        if c <= prev:
            c = round(prev + min_gap, 3)
        cuts.append(c)
        prev = c
    tail = y[y >= prev]
    top = 2.0 * float(tail.mean()) - prev if tail.size else prev + 1.0
    return [0.0, *cuts, round(max(top, prev + min_gap), 3)]


def path_matrices(n_leaves: int) -> tuple[np.ndarray, np.ndarray]:
    """``right[l, k]`` = 1 when leaf ``l``'s path goes right at node ``k``, ``left`` likewise.

    Nodes in heap order: node ``k``'s children are ``2k + 1`` (lower times) and ``2k + 2``.
    """
    depth = int(round(math.log2(n_leaves)))
    if 2**depth != n_leaves:
        raise ValueError(f"a complete binary tree needs a power of 2 leaves, not {n_leaves}")
    right = np.zeros((n_leaves, n_leaves - 1))
    left = np.zeros((n_leaves, n_leaves - 1))
    for leaf in range(n_leaves):
        node = 0
        for level in range(depth - 1, -1, -1):
            bit = (leaf >> level) & 1
            (right if bit else left)[leaf, node] = 1.0
            node = 2 * node + 1 + bit
    return right, left


class TreeProgressive(BaselineModel):
    """``tpm``: L - 1 node classifiers (one head), leaf probabilities as path products.

    Loss per row: ``sum of the path's BCEs`` + ``mse_weight * (E - y)**2`` +
    ``std_weight * sqrt(Var)``, in scaled units, with ``E`` and ``Var`` the mean and variance
    of the leaf centres under the leaf probabilities (the paper's prediction and its
    uncertainty term). Served as the histogram over the leaf buckets.
    """

    name = "tpm"
    family = "histogram"
    mse_weight: ClassVar[float] = 0.2
    std_weight: ClassVar[float] = 0.1

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        edges_s: Sequence[float] | None = None,
        **kw: object,
    ) -> None:
        edges = list(edges_s) if edges_s is not None else tpm_edges(np.array([0.0, 1.0]))
        n_leaves = len(edges) - 1
        super().__init__(cardinalities, numeric_width, n_leaves - 1, **kw)  # type: ignore[arg-type]
        right, left = path_matrices(n_leaves)
        self.register_buffer("edges_s", torch.tensor(edges, dtype=torch.float32))
        self.register_buffer("right", torch.tensor(right.T, dtype=torch.float32))
        self.register_buffer("left", torch.tensor(left.T, dtype=torch.float32))

    def log_leaf_probs(self, raw: torch.Tensor) -> torch.Tensor:
        """``log P(leaf)`` = sum over the path of ``log sigmoid(+-z_node)``, (n, L)."""
        right: torch.Tensor = self.right  # type: ignore[assignment]
        left: torch.Tensor = self.left  # type: ignore[assignment]
        return F.logsigmoid(raw) @ right.to(raw.dtype) + F.logsigmoid(-raw) @ left.to(raw.dtype)

    def centres_s(self) -> torch.Tensor:
        """Leaf centres in seconds (bucket midpoints; the open leaf's nominal midpoint)."""
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        return bucket_midpoints(edges)

    def leaf_of(self, y: torch.Tensor) -> torch.Tensor:
        """Leaf index of labels in scaled units (the histogram family's bucket rule)."""
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        return bucket_index(edges, y, self.label_scale)

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = self.log_leaf_probs(raw)
        path_bce = -logp.gather(1, self.leaf_of(y).unsqueeze(1))[:, 0]
        p = torch.exp(logp)
        c = (self.centres_s() / self.label_scale).to(raw.dtype)
        mean = (p * c).sum(dim=1)
        var = (p * (c - mean.unsqueeze(1)) ** 2).sum(dim=1)
        std = torch.sqrt(var + 1e-8)
        return (path_bce + self.mse_weight * (mean - y) ** 2 + self.std_weight * std).mean()

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        return (torch.exp(self.log_leaf_probs(raw)) * self.centres_s().to(raw.dtype)).sum(dim=1)

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        return torch.exp(self.log_leaf_probs(raw)), per_row(edges.to(raw.dtype), raw)

    def output_names(self) -> list[str]:
        return ["probs", "edges"]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {
            "edges_s": [float(v) for v in self.edges_s],  # type: ignore[union-attr]
            "n_leaves": float(len(self.edges_s) - 1),  # type: ignore[arg-type]
            "mse_weight": self.mse_weight,
            "std_weight": self.std_weight,
        }
