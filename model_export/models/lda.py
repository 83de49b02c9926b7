"""``lda``: label-distribution anchors, served as a histogram over fixed watch-time buckets.

Within a duration group the watch ratio (watch time / duration) has a multi-peaked
distribution; the method quantises it into a small codebook of *anchors*, each a distribution
of the watch ratio, aligns every instance to the anchors of its group by entropic optimal
transport, and predicts from the instance's anchor weights. Here:

1. Codebook (training days, per duration group: ``n_groups`` equal-frequency groups plus the
   unknown-duration group): the group's watch ratios are cut into ``n_anchors`` equal-frequency
   clusters (a 1-D vector quantisation of the labels), and anchor ``k`` is the histogram of
   cluster ``k`` over fixed ratio bins, smoothed over neighbouring bins and floored so that
   every anchor gives every bin some mass. The anchors' prior in each group is uniform.
2. Network: ``n_anchors`` logits (the instance's anchor weights ``pi``) and one regression
   output (the point, MSE on the scaled watch time).
3. Loss: ``-log sum_k pi_k A[g, k, bin(ratio)]`` (the label under the instance's mixture of
   its group's anchors) + ``align_weight`` * the cross-entropy between ``pi`` and the
   entropic OT plan of the batch (Sinkhorn, ``sinkhorn_iterations`` steps at temperature
   ``sinkhorn_epsilon``) between instances (uniform marginal) and anchors (their uniform
   prior) on the scores ``log A[g, k, bin] + log pi_k``, computed without gradient +
   ``point_weight`` * the regression's MSE.
4. Served, in the graph, per row: the ratio distribution ``sum_k pi_k A[g, k, :]`` mapped to
   seconds through the row's own duration (ratio bin ``j`` spreads its mass uniformly on
   ``[rho_j d, rho_{j+1} d)``) and collected into the fixed buckets of ``softmax``'s edges (the
   last one open), with a share ``floor`` spread evenly over the buckets; the regression's
   ``max(0, .)`` in seconds is the histogram's per-row ``point``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from model_export.models.baseline import per_row
from model_export.models.duration import DurationHead, DurationInput, group_of_ms, known_duration
from model_export.models.softmax import exponential_bucket_edges

RATIO_EDGES = (
    0.0, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4,
    0.55, 0.7, 0.85, 0.95, 1.0, 1.05, 1.15, 1.4, 2.0, 3.0, 5.0,
)  # fmt: skip
"""Watch-ratio bins of the anchors; ratios past the last edge count in the last bin."""

OPEN_END_S = 1e7
"""Stand-in for the open last bucket's infinite upper edge in the overlap arithmetic."""


def ratio_bin(ratio: np.ndarray, edges: Sequence[float] = RATIO_EDGES) -> np.ndarray:
    """Bin of each watch ratio (the last bin also takes every ratio past its end)."""
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    return np.searchsorted(inner, np.asarray(ratio, dtype=np.float64), side="right")


def fit_anchors(
    ratio: np.ndarray, n_anchors: int, edges: Sequence[float] = RATIO_EDGES, floor: float = 1e-3
) -> np.ndarray:
    """``n_anchors`` distributions over the ratio bins from one group's ratios, (K, J).

    Equal-frequency clusters of the ratios (ties broken by order, so each holds n / K
    labels); each cluster's bin histogram, smoothed with weights (1/4, 1/2, 1/4) over
    neighbouring bins and mixed with a ``floor`` share of the uniform law.
    """
    j = len(edges) - 1
    order = np.argsort(np.asarray(ratio, dtype=np.float64), kind="stable")
    bins = ratio_bin(np.asarray(ratio)[order], edges)
    out = np.empty((n_anchors, j))
    for k, part in enumerate(np.array_split(bins, n_anchors)):
        h = np.bincount(part, minlength=j).astype(np.float64)
        if h.sum() == 0:
            h[:] = 1.0
        padded = np.concatenate([[h[0]], h, [h[-1]]])
        smooth = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
        out[k] = (1.0 - floor) * smooth / smooth.sum() + floor / j
    return out


def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Entropic OT plan between rows (uniform) and columns (uniform), rows summing to 1.

    ``scores`` are log-affinities (n, K); the plan is ``exp(scores / epsilon)`` scaled
    alternately to the two marginals in log space, as in Cuturi (2013).
    """
    n, k = scores.shape
    log_q = scores / epsilon
    for _ in range(iterations):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - np.log(k)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - np.log(n)
    return torch.exp(log_q) * n


class LabelDistributionAnchors(DurationHead):
    """``lda``: anchor weights over per-duration-group watch-ratio anchors, plus a point."""

    name = "lda"
    family = "histogram"
    n_groups_default: ClassVar[int] = 10
    n_anchors: ClassVar[int] = 8
    floor: ClassVar[float] = 1e-3
    align_weight: ClassVar[float] = 1.0
    point_weight: ClassVar[float] = 1.0
    sinkhorn_epsilon: ClassVar[float] = 0.5
    sinkhorn_iterations: ClassVar[int] = 3

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        duration: DurationInput,
        edges_s: Sequence[float] | None = None,
        **kw: object,
    ) -> None:
        groups = self.n_groups_default
        super().__init__(cardinalities, numeric_width, self.n_anchors + 1, duration, groups, **kw)
        edges = list(edges_s) if edges_s is not None else exponential_bucket_edges()
        self.register_buffer("edges_s", torch.tensor(edges, dtype=torch.float32))
        self.register_buffer("ratio_edges", torch.tensor(RATIO_EDGES, dtype=torch.float32))
        j = len(RATIO_EDGES) - 1
        self.register_buffer(
            "anchors", torch.full((groups + 1, self.n_anchors, j), 1.0 / j, dtype=torch.float32)
        )

    # ----- training-day constants and targets ---------------------------------------------------

    def _duration_ms(self, duration_ms: np.ndarray) -> np.ndarray:
        """Durations with unknown ones replaced by the one the graph decodes for them."""
        d = np.asarray(duration_ms, dtype=np.float64)
        return np.where(known_duration(d), d, np.expm1(self.duration.mean))

    def fit_training_days(self, duration_ms: np.ndarray, y_s: np.ndarray) -> None:
        super().fit_training_days(duration_ms, y_s)
        g = group_of_ms(duration_ms, self.log_cuts.numpy())  # type: ignore[operator]
        ratio = np.asarray(y_s, dtype=np.float64) / (self._duration_ms(duration_ms) / 1000.0)
        table = np.stack(
            [fit_anchors(ratio[g == k], self.n_anchors, floor=self.floor) for k in range(self.n_groups + 1)]
        )
        self.anchors.copy_(torch.from_numpy(table))  # type: ignore[operator]

    def targets(self, duration_ms: np.ndarray, y_s: np.ndarray) -> torch.Tensor:
        """``[w / label_scale, group, ratio bin]`` per row (float32)."""
        g = group_of_ms(duration_ms, self.log_cuts.numpy())  # type: ignore[operator]
        y = np.asarray(y_s, dtype=np.float64)
        b = ratio_bin(y / (self._duration_ms(duration_ms) / 1000.0))
        return torch.from_numpy(np.stack([y / self.label_scale, g, b], axis=1).astype(np.float32))

    # ----- loss -------------------------------------------------------------------------------

    def anchor_logits(self, raw: torch.Tensor) -> torch.Tensor:
        return raw[:, : self.n_anchors]

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w, g, b = y[:, 0].to(raw.dtype), y[:, 1].long(), y[:, 2].long()
        anchors: torch.Tensor = self.anchors  # type: ignore[assignment]
        log_a = torch.log(anchors.to(raw.dtype)[g, :, b])  # (n, K): label under each anchor
        log_pi = F.log_softmax(self.anchor_logits(raw), dim=1)
        nll = -torch.logsumexp(log_pi + log_a, dim=1)
        with torch.no_grad():
            plan = sinkhorn(log_a + log_pi, self.sinkhorn_epsilon, self.sinkhorn_iterations)
        align = -(plan * log_pi).sum(dim=1)
        mse = (raw[:, self.n_anchors] - w) ** 2
        return (nll + self.align_weight * align + self.point_weight * mse).mean()

    # ----- served family ----------------------------------------------------------------------

    def bucket_probs(self, raw: torch.Tensor) -> torch.Tensor:
        """The anchors' mixture mapped to the fixed seconds buckets through each row's duration."""
        anchors: torch.Tensor = self.anchors  # type: ignore[assignment]
        pi = torch.softmax(self.anchor_logits(raw), dim=1)
        ratio_p = torch.einsum("nk,nkj->nj", pi, anchors.to(raw.dtype)[self.group(raw)])
        d_s = self._seconds(raw)
        rho: torch.Tensor = self.ratio_edges  # type: ignore[assignment]
        rho = rho.to(raw.dtype)
        lo = rho[:-1].unsqueeze(0) * d_s.unsqueeze(1)  # (n, J)
        hi = rho[1:].unsqueeze(0) * d_s.unsqueeze(1)
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        e_lo = edges[:-1].to(raw.dtype)
        e_hi = torch.cat([edges[1:-1], torch.tensor([OPEN_END_S])]).to(raw.dtype)
        overlap = torch.minimum(hi.unsqueeze(2), e_hi.view(1, 1, -1)) - torch.maximum(
            lo.unsqueeze(2), e_lo.view(1, 1, -1)
        )
        share = torch.clamp(overlap, min=0.0) / (hi - lo).unsqueeze(2)  # (n, J, B)
        probs = torch.einsum("nj,njb->nb", ratio_p, share)
        n_buckets = e_lo.shape[0]
        return (1.0 - self.floor) * probs + self.floor / n_buckets

    def _seconds(self, raw: torch.Tensor) -> torch.Tensor:
        """The row's duration in seconds as the graph decodes it (exp - 1, as ONNX has no expm1)."""
        return (torch.exp(self.log_duration(raw)) - 1.0) / 1000.0

    def point_s(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.relu(raw[:, self.n_anchors]) * self.label_scale

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        return self.point_s(raw)

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        edges: torch.Tensor = self.edges_s  # type: ignore[assignment]
        return self.bucket_probs(raw), per_row(edges.to(raw.dtype), raw), self.point_s(raw)

    def output_names(self) -> list[str]:
        return ["probs", "edges", "point"]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {
            "edges_s": [float(v) for v in self.edges_s],  # type: ignore[union-attr]
            "ratio_edges": [float(v) for v in RATIO_EDGES],
            "n_duration_groups": float(self.n_groups),
            "log1p_duration_cuts": [float(v) for v in self.log_cuts],  # type: ignore[union-attr]
            "n_anchors": float(self.n_anchors),
            "floor": self.floor,
            "align_weight": self.align_weight,
            "point_weight": self.point_weight,
            "sinkhorn_epsilon": self.sinkhorn_epsilon,
            "sinkhorn_iterations": float(self.sinkhorn_iterations),
        }
