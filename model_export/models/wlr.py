"""``wlr``: weighted logistic regression, served as an exponential whose mean is the odds."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from model_export.models.baseline import BaselineModel


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
