"""``ziln``: the zero-inflated lognormal likelihood (an atom at 0 + a lognormal)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch.nn import functional as F

from model_export.models.baseline import BaselineModel


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
