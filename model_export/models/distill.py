"""``distill_softmax``: the ``softmax`` buckets trained on mean-preserving soft labels."""

from __future__ import annotations

from typing import ClassVar

import torch

from model_export.models.softmax import BucketSoftmax


def soft_labels(
    y_s: torch.Tensor,
    edges_s: torch.Tensor,
    bandwidth: float = 0.5,
    offset_s: float = 0.5,
    steps: int = 60,
    tilt_bound: float = 60.0,
) -> torch.Tensor:
    """Each label spread over the buckets, keeping its bucket-midpoint mean; (n, B), float64.

    Kernel: ``k_j = exp(-(log(m_j + c) - log(y + c))**2 / (2 h**2))`` over the bucket
    midpoints ``m_j`` (a Gaussian in log time, ``h = bandwidth``, ``c = offset_s``), so a
    label spreads over more seconds the longer it is. Such a kernel's midpoint mean is not
    ``y`` (the log scale and the grid skew it); the weights are tilted,
    ``q_j ∝ k_j exp(lambda m_j / (y + c))``, with the one ``lambda`` (bisection on
    ``[-tilt_bound, tilt_bound]``, the mean rises with it) that makes ``sum_j q_j m_j = y``.
    A label below the first midpoint or above the last cannot be matched: its weights go to
    that end bucket, as far as the bound lets them.
    """
    y = y_s.detach().to(torch.float64).unsqueeze(1)
    edges = edges_s.detach().to(torch.float64)
    mid = 0.5 * (edges[1:] + edges[:-1]).unsqueeze(0)
    base = -((torch.log(mid + offset_s) - torch.log(y + offset_s)) ** 2) / (2 * bandwidth**2)
    t = mid / (y + offset_s)
    lo = torch.full_like(y, -tilt_bound)
    hi = torch.full_like(y, tilt_bound)
    for _ in range(steps):
        lam = 0.5 * (lo + hi)
        mean = (torch.softmax(base + lam * t, dim=1) * mid).sum(dim=1, keepdim=True)
        above = mean > y
        hi = torch.where(above, lam, hi)
        lo = torch.where(above, lo, lam)
    return torch.softmax(base + 0.5 * (lo + hi) * t, dim=1)


class DistilledBucketSoftmax(BucketSoftmax):
    """``distill_softmax``: ``softmax``'s buckets, cross-entropy against soft labels.

    Loss: ``-sum_j q_j log p_j`` with ``q`` from :func:`soft_labels`; prediction, served
    family and edges exactly as ``softmax``.
    """

    name = "distill_softmax"
    bandwidth: ClassVar[float] = 0.5
    offset_s: ClassVar[float] = 0.5

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        q = soft_labels(y * self.label_scale, edges, self.bandwidth, self.offset_s)
        return -(q.to(raw.dtype) * torch.log_softmax(raw, dim=1)).sum(dim=1).mean()

    def extras(self) -> dict[str, float | str | list[float]]:
        return {
            **super().extras(),
            "kernel": "gaussian in log(seconds + offset), tilted to keep the label's mean",
            "kernel_bandwidth_log": self.bandwidth,
            "kernel_offset_s": self.offset_s,
        }
