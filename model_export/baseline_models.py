"""The industry's watch-time baselines: one trunk shared with EGMN, one head and loss each.

Every baseline embeds the same features the same way as EGMN (16-dim embeddings, initialised
alike) and feeds them through EGMN's own :class:`model_export.egmn.MLPBackbone`, so the only
differences in the evaluation are the head, the loss and the served family. Each works in
scaled time units (seconds / ``label_scale``, 10 s as for EGMN) and converts back to seconds
only in :meth:`BaselineModel.served`, which is what the ONNX graph emits.

- ``vr``: 1 output, MSE; ``normal`` censored at 0 with one spread fitted on the validation
  day; point ``max(loc, 0)``.
- ``wlr``: 1 logit, weighted logistic loss (positive weight y, negative weight 1);
  ``exponential`` with rate 1/odds; point the odds.
- ``ziln``: 3 outputs, zero-inflated lognormal likelihood; ``ziln``; point the mean.
- ``softmax``: B logits, cross-entropy over exponentially growing buckets; ``histogram``;
  point the bucket-midpoint mean.
- ``cread``: M logits, BCE at adaptive split points + monotonicity penalty + Huber on the
  restored mean; ``survival``; point the restored mean.
- ``d2q``: 1 output, MSE on the quantile level within the duration group; no family
  (offline point metrics only); point the group's quantile at the predicted level.

Every head's served parameters carry a leading batch axis, shared constants (bucket edges,
thresholds, the fitted spread) included: a batcher may then split any output by rows.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model_export.egmn import MLPBackbone


class Trunk(nn.Module):
    """Embeddings + EGMN's MLP backbone: features -> hidden vector."""

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        embedding_dim: int = 16,
        hidden: Sequence[int] = (256, 128, 64),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_dim) for c in cardinalities)
        for emb in self.embeddings:  # as EGMN initialises its own
            nn.init.normal_(emb.weight, std=0.05)
        in_dim = embedding_dim * len(cardinalities) + numeric_width
        self.backbone = MLPBackbone(in_dim, hidden, dropout)
        self.out_dim = self.backbone.out_dim

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        embedded = [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.backbone(torch.cat([*embedded, numeric], dim=1))  # type: ignore[no-any-return]


class BaselineModel(nn.Module, ABC):
    """Trunk + linear head; subclasses say what the head means, its loss and its family."""

    name: ClassVar[str]
    family: ClassVar[str | None]

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        out_dim: int,
        label_scale: float = 10.0,
        embedding_dim: int = 16,
        hidden: Sequence[int] = (256, 128, 64),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.trunk = Trunk(cardinalities, numeric_width, embedding_dim, hidden, dropout)
        self.head = nn.Linear(self.trunk.out_dim, out_dim)
        self.label_scale = float(label_scale)

    @property
    def embeddings(self) -> nn.ModuleList:
        """The embedding tables (the trainer puts a small L2 penalty on the rows it uses)."""
        return self.trunk.embeddings

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """Raw head output, (n, out_dim)."""
        return self.head(self.trunk(categorical, numeric))  # type: ignore[no-any-return]

    @abstractmethod
    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean training loss of a batch; ``y`` in scaled units."""

    def validation_loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What early stopping watches on the validation day: the model's own objective."""
        return self.loss(raw, y)

    @abstractmethod
    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        """The model's own point prediction in seconds, (n,)."""

    @abstractmethod
    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The served family's parameters in seconds, in the order of :meth:`output_names`."""

    @abstractmethod
    def output_names(self) -> list[str]:
        """ONNX output names, equal to the family's parameter names."""

    def extras(self) -> dict[str, float | str | list[float]]:
        """Head constants worth recording in the manifest (informational)."""
        return {}


class ServingBaseline(nn.Module):
    """What is exported: features -> the family's parameters in seconds."""

    def __init__(self, model: BaselineModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.served(self.model(categorical, numeric))

    def output_names(self) -> list[str]:
        """ONNX output names (the family's parameter names)."""
        return self.model.output_names()


def _rows(constant: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A shared constant repeated once per row of ``like`` (outputs keep a batch axis)."""
    return constant.unsqueeze(0).expand(like.shape[0], *constant.shape)


class ValueRegression(BaselineModel):
    """``vr``: MSE on the label; served as a normal censored at 0 with one fitted spread.

    The regression estimates E[T]; its spread is a single constant fitted by maximum
    likelihood of the censored normal on the validation day (network frozen), since MSE says
    nothing about the spread.
    """

    name = "vr"
    family = "normal"

    def __init__(self, cardinalities: Sequence[int], numeric_width: int, **kw: object) -> None:
        super().__init__(cardinalities, numeric_width, 1, **kw)  # type: ignore[arg-type]
        self.register_buffer("scale_s", torch.tensor(1.0))

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(raw[:, 0], y)

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        return raw[:, 0] * self.label_scale

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loc = raw[:, 0] * self.label_scale
        scale: torch.Tensor = self.scale_s  # type: ignore[assignment]
        return loc, scale.expand(loc.shape[0])

    def output_names(self) -> list[str]:
        return ["loc", "scale"]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {"scale_s": float(self.scale_s)}  # type: ignore[arg-type]


class WeightedLogistic(BaselineModel):
    """``wlr``: weighted logistic regression; the odds ``exp(z)`` estimate E[T].

    Each impression is a positive of weight y and a negative of weight 1, so the loss is
    ``-y log sigmoid(z) - log sigmoid(-z)``, minimised at ``exp(z) = E[y]``. Served as the
    exponential with that mean (rate = 1/odds), the maximum-entropy law on [0, inf).
    """

    name = "wlr"
    family = "exponential"

    def __init__(self, cardinalities: Sequence[int], numeric_width: int, **kw: object) -> None:
        super().__init__(cardinalities, numeric_width, 1, **kw)  # type: ignore[arg-type]

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = raw[:, 0]
        return (-y * F.logsigmoid(z) - F.logsigmoid(-z)).mean()

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.exp(raw[:, 0]) * self.label_scale

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.exp(-raw[:, 0]) / self.label_scale,)

    def output_names(self) -> list[str]:
        return ["rate"]


class ZeroInflatedLognormal(BaselineModel):
    """``ziln``: P(T > 0) by a logit, log T given T > 0 normal (Wang et al., 2019).

    Loss: BCE of the positive indicator + the lognormal NLL of the positive labels (averaged
    over all rows, zeros contributing nothing to the second term, as in the paper's code).
    ``sigma = softplus + 1e-3`` keeps the density finite.
    """

    name = "ziln"
    family = "ziln"
    max_p0: ClassVar[float] = 1.0 - 1e-6

    def __init__(self, cardinalities: Sequence[int], numeric_width: int, **kw: object) -> None:
        super().__init__(cardinalities, numeric_width, 3, **kw)  # type: ignore[arg-type]

    @staticmethod
    def _split(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return raw[:, 0], raw[:, 1], F.softplus(raw[:, 2]) + 1e-3

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logit, mu, sigma = self._split(raw)
        positive = (y > 0).to(raw.dtype)
        bce = F.binary_cross_entropy_with_logits(logit, positive)
        log_y = torch.log(torch.where(y > 0, y, torch.ones_like(y)))
        z = (log_y - mu) / sigma
        nll = log_y + torch.log(sigma) + 0.5 * z * z + 0.5 * math.log(2 * math.pi)
        return bce + (positive * nll).mean()

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logit, mu, sigma = self._split(raw)
        # float32 sigmoid reaches 1.0 exactly for very negative logits; the family needs p0 < 1.
        p0 = torch.sigmoid(-logit).clamp(max=self.max_p0)
        return p0, mu + math.log(self.label_scale), sigma

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        p0, mu, sigma = self.served(raw)
        return (1.0 - p0) * torch.exp(mu + 0.5 * sigma * sigma)

    def output_names(self) -> list[str]:
        return ["p0", "mu", "sigma"]


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
        return torch.softmax(raw, dim=1), _rows(edges, raw)

    def output_names(self) -> list[str]:
        return ["probs", "edges"]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {"edges_s": [float(v) for v in self.edges_s]}  # type: ignore[union-attr]


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
        return _rows(thr, raw), self.served_sf(raw)

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


class DurationQuantile(BaselineModel):
    """``d2q``: regression of the label's quantile level within its duration group (Zhan et al.,
    2022); mapped back through that group's training quantile function.

    The raw output passes a sigmoid (a level in (0, 1)); the loss is MSE against the level the
    label holds among the training labels of its duration group (see
    :class:`model_export.baseline_train.DurationGroups`). There is no density: offline point
    metrics only.
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
