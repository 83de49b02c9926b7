"""``huber``, ``huberpp``, ``am``: point regressors that differ only in their loss.

Each head emits one number, the point prediction; its spread is fitted afterwards on the
validation day (network frozen), in one of two forms, whichever has the lower negative
log-likelihood there (never the test day):

- ``ziln``: a log-space spread. ``p0`` is the validation day's share of labels at exactly
  0 s (the likelihood's maximiser for a constant atom); the positive part is lognormal with
  one fitted ``sigma`` and ``mu = log(point) - log(1 - p0) - sigma**2 / 2``, so the family's
  mean, which is also its point, is exactly the regression's point.
- ``normal``: a normal censored at 0 with ``loc`` = the point and one fitted scale, as ``vr``.

Losses, with ``y`` the label in scaled units (seconds / ``label_scale``) and ``z`` the head's
raw output:

- ``huber``: ``Huber_delta(z - y)``, ``delta = 1`` scaled unit (10 s); point ``z``.
- ``huberpp``: Huber of the relative error, ``Huber_delta((z - y) / (y + c))`` with
  ``delta = 1`` (100 % error) and ``c = 0.1`` scaled unit (1 s), which keeps labels at 0 s
  finite; point ``z``.
- ``am``: asymmetric squared loss in log space, ``w * (z - log(1 + y_s))**2`` with ``y_s``
  the label in seconds and ``w = tau`` when ``z`` is below it (under-estimate), ``1 - tau``
  above, ``tau = 0.7``; point ``exp(z) - 1`` seconds.

``Huber_delta(r) = r**2 / 2`` for ``|r| <= delta``, else ``delta * (|r| - delta / 2)``. Every
point is floored at ``point_floor_s`` (the log-space spread needs it positive).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from model_export.models.baseline import BaselineModel
from model_export.models.vr import fit_normal_scale
from service.distributions import ZILN, Normal


def _grid_argmin(f: Callable[[float], float], lo: float, hi: float) -> float:
    """The minimiser of a unimodal 1-D function: a log-spaced grid, then a finer one."""
    grid = np.geomspace(lo, hi, 81)
    best = float(grid[int(np.argmin([f(s) for s in grid]))])
    fine = np.geomspace(best / 1.13, best * 1.13, 41)
    return float(fine[int(np.argmin([f(s) for s in fine]))])


def ziln_around_point(point: np.ndarray, p0: float, sigma: float) -> ZILN:
    """The ZILN whose mean is ``point``: atom ``p0``, lognormal spread ``sigma``."""
    mu = np.log(point) - math.log1p(-p0) - 0.5 * sigma * sigma
    n = point.shape[0]
    return ZILN(p0=np.full(n, p0), mu=mu, sigma=np.full(n, sigma))


def fit_ziln_sigma(point: np.ndarray, y: np.ndarray, p0: float) -> float:
    """The one lognormal spread maximising the likelihood of ``y`` around ``point``."""

    def nll(sigma: float) -> float:
        return float(-ziln_around_point(point, p0, sigma).log_prob(y[:, None])[:, 0].mean())

    return _grid_argmin(nll, 0.02, 20.0)


def mean_nll(dist: Normal | ZILN, y: np.ndarray) -> float:
    """Mean negative log-likelihood (log mass of the atom at 0, log density elsewhere)."""
    return float(-dist.log_prob(y[:, None])[:, 0].mean())


class PointRegression(BaselineModel):
    """One output, the point; a loss of the subclass; a spread fitted on the validation day."""

    point_floor_s: ClassVar[float] = 0.05

    def __init__(self, cardinalities: Sequence[int], numeric_width: int, **kw: object) -> None:
        super().__init__(cardinalities, numeric_width, 1, **kw)  # type: ignore[arg-type]
        # 1: the log-space spread (ziln) was chosen; 0: the censored normal.
        self.register_buffer("log_space", torch.tensor(1.0))
        self.register_buffer("p0", torch.tensor(0.1))
        self.register_buffer("sigma", torch.tensor(1.0))
        self.register_buffer("scale_s", torch.tensor(20.0))
        # validation-day mean NLL of each candidate: normal, ziln (NaN before the fit)
        self.register_buffer("validation_nll", torch.tensor([math.nan, math.nan]))

    @property
    def family(self) -> str:  # type: ignore[override]
        """The served family, as the validation-day fit chose it."""
        return "ziln" if float(self.log_space) > 0.5 else "normal"  # type: ignore[arg-type]

    def point_s(self, raw: torch.Tensor) -> torch.Tensor:
        """The head's point in seconds, before the floor; the subclass says how."""
        return raw[:, 0] * self.label_scale

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        return self.point_s(raw).clamp(min=self.point_floor_s)

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        point = self.restore(raw)
        n = point.shape[0]
        if self.family == "normal":
            scale: torch.Tensor = self.scale_s  # type: ignore[assignment]
            return point, scale.expand(n)
        p0: torch.Tensor = self.p0  # type: ignore[assignment]
        sigma: torch.Tensor = self.sigma  # type: ignore[assignment]
        mu = torch.log(point) - torch.log1p(-p0) - 0.5 * sigma * sigma
        return p0.expand(n), mu, sigma.expand(n)

    def output_names(self) -> list[str]:
        return ["loc", "scale"] if self.family == "normal" else ["p0", "mu", "sigma"]

    def fit_spread(self, point: np.ndarray, y: np.ndarray) -> None:
        """Fit both spreads on (validation) rows and keep the likelier one."""
        point = np.maximum(np.asarray(point, dtype=np.float64), self.point_floor_s)
        y = np.asarray(y, dtype=np.float64)
        scale = fit_normal_scale(point, y)
        nll_normal = mean_nll(Normal(loc=point, scale=np.full(point.shape, scale)), y)
        p0 = float(np.clip(np.mean(y == 0), 1e-6, 1.0 - 1e-6))
        sigma = fit_ziln_sigma(point, y, p0)
        nll_ziln = mean_nll(ziln_around_point(point, p0, sigma), y)
        self.scale_s.fill_(scale)  # type: ignore[operator]
        self.p0.fill_(p0)  # type: ignore[operator]
        self.sigma.fill_(sigma)  # type: ignore[operator]
        self.validation_nll.copy_(torch.tensor([nll_normal, nll_ziln]))  # type: ignore[operator]
        self.log_space.fill_(1.0 if nll_ziln <= nll_normal else 0.0)  # type: ignore[operator]

    def extras(self) -> dict[str, float | str | list[float]]:
        nll = [float(v) for v in self.validation_nll]  # type: ignore[union-attr]
        out: dict[str, float | str | list[float]] = {
            "spread_family": self.family,
            "point_floor_s": self.point_floor_s,
        }
        if all(math.isfinite(v) for v in nll):  # NaN until fit_spread has run
            out["spread_fitted_on"] = "validation day"
            out["validation_nll_normal"] = nll[0]
            out["validation_nll_ziln"] = nll[1]
        if self.family == "normal":
            out["scale_s"] = float(self.scale_s)  # type: ignore[arg-type]
        else:
            out["p0"] = float(self.p0)  # type: ignore[arg-type]
            out["sigma"] = float(self.sigma)  # type: ignore[arg-type]
        return out


def huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    """``r**2 / 2`` inside ``[-delta, delta]``, ``delta * (|r| - delta / 2)`` outside."""
    return F.huber_loss(r, torch.zeros_like(r), reduction="none", delta=delta)


class HuberRegression(PointRegression):
    """``huber``: the Huber loss of the scaled residual."""

    name = "huber"
    delta: ClassVar[float] = 1.0

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return huber(raw[:, 0] - y, self.delta).mean()

    def extras(self) -> dict[str, float | str | list[float]]:
        return {"huber_delta_scaled": self.delta, **super().extras()}


class RelativeHuberRegression(PointRegression):
    """``huberpp``: the Huber loss of the relative error ``(z - y) / (y + c)``."""

    name = "huberpp"
    delta: ClassVar[float] = 1.0
    offset: ClassVar[float] = 0.1

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return huber((raw[:, 0] - y) / (y + self.offset), self.delta).mean()

    def extras(self) -> dict[str, float | str | list[float]]:
        return {
            "huber_delta_relative": self.delta,
            "relative_offset_scaled": self.offset,
            **super().extras(),
        }


class AsymmetricLogRegression(PointRegression):
    """``am``: asymmetric squared loss on ``log(1 + seconds)``, under-estimates weighted ``tau``."""

    name = "am"
    tau: ClassVar[float] = 0.7

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        e = raw[:, 0] - torch.log1p(y * self.label_scale)
        w = torch.where(e < 0, torch.full_like(e, self.tau), torch.full_like(e, 1.0 - self.tau))
        return (w * e * e).mean()

    def point_s(self, raw: torch.Tensor) -> torch.Tensor:
        # exp - 1, not expm1: ONNX has no expm1 (the floor keeps the point far above 1e-16)
        return torch.exp(raw[:, 0]) - 1.0

    def extras(self) -> dict[str, float | str | list[float]]:
        return {"asymmetry_tau": self.tau, "log_space": "log(1 + seconds)", **super().extras()}
