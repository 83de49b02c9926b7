"""``vr``: value regression (MSE), served as a normal censored at 0 with one fitted spread."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from model_export.models.baseline import BaselineModel
from service.distributions import Normal


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


def fit_normal_scale(loc: np.ndarray, y: np.ndarray) -> float:
    """The one spread (seconds) maximising the censored normal's likelihood of ``y``.

    A log-spaced grid, then a finer one around the best point: the likelihood is unimodal in
    the scale and a 1-D search needs no gradient.
    """

    def nll(scale: float) -> float:
        dist = Normal(loc=loc, scale=np.full(loc.shape, scale))
        return float(-dist.log_prob(y[:, None])[:, 0].mean())

    grid = np.geomspace(0.1, 1000.0, 81)
    best = float(grid[int(np.argmin([nll(s) for s in grid]))])
    fine = np.geomspace(best / 1.13, best * 1.13, 41)
    return float(fine[int(np.argmin([nll(s) for s in fine]))])
