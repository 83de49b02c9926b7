"""``cwm``: the counterfactual watch model (Zhao et al., KDD 2024), served as a survival curve.

The counterfactual watch time (CWT) is how long the user would watch if the video were long
enough; the observed watch time is the CWT cut short by the video's end. The user exits where
watching stops paying: each second brings the relevance ``r`` of the video to the user and
costs ``c(t) = 1 - exp(-t / tau)``, a marginal cost rising from 0 towards 1 as the session
goes on, so the benefit ``integral_0^t (r - c(s)) ds`` peaks at the CWT, where ``c = r``:

    CWT = -tau * log(1 - r),   equivalently   r = 1 - exp(-CWT / tau)   (cost-based transform)

Exit process, per impression: the relevance felt on this impression has logit
``z = mu + s * eps``, ``eps`` standard logistic (``mu``, ``s`` from the network per row,
``tau`` one learnt scale), so the exit time has the closed-form survival function

    S(t) = P(CWT > t) = sigmoid((mu - g(t)) / s),   g(t) = logit(c(t)) = log(expm1(t / tau)),

log-logistic near 0 and an exponential tail of mean ``tau * s`` far out.

Counterfactual likelihood over the observed watch time ``w`` of a video of duration ``d``:
an exit seen before the end (``w < d``, or an unknown duration) scores the density
``-S'(w)``; a completed play (``w >= d``, replays included) only says the CWT is at least
``w`` and scores ``S(w)``; a 0 s record is an exit within the first ``zero_window_s`` and
scores ``1 - S(zero_window_s)``.

Served: the survival family at a fixed geometric grid of thresholds, ``sf = S(t_m)`` with a
floor share as in ``cread`` (every segment keeps some mass in float32); point the family's
mean, which :meth:`CWM.restore` computes the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model_export.models.baseline import per_row
from model_export.models.cread import survival_mean
from model_export.models.duration import DurationHead, DurationInput, known_duration


def cwm_thresholds(n: int = 64, first: float = 0.2, last: float = 900.0) -> list[float]:
    """The served grid: ``n`` geometric thresholds from ``first`` to ``last`` seconds."""
    return [round(float(t), 4) for t in np.geomspace(first, last, n)]


def one_minus_exp(x: torch.Tensor) -> torch.Tensor:
    """``1 - exp(-x)`` to full relative precision for small ``x`` (ONNX has no expm1):
    ``tanh(x / 2) * (1 + exp(-x))``."""
    return torch.tanh(0.5 * x) * (1.0 + torch.exp(-x))


def log_expm1(x: torch.Tensor) -> torch.Tensor:
    """``log(expm1(x))`` for ``x > 0``, without overflow: ``x + log(1 - exp(-x))``."""
    return x + torch.log(one_minus_exp(x))


class CWM(DurationHead):
    """``cwm``: per-row relevance logit ``mu`` and spread ``s``; one learnt cost scale ``tau``."""

    name = "cwm"
    family = "survival"
    floor: ClassVar[float] = 1e-3
    zero_window_s: ClassVar[float] = 0.5
    min_spread: ClassVar[float] = 0.05
    tau_init_s: ClassVar[float] = 20.0

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        duration: DurationInput,
        thresholds_s: Sequence[float] | None = None,
        **kw: object,
    ) -> None:
        super().__init__(cardinalities, numeric_width, 2, duration, 1, **kw)
        thr = list(thresholds_s) if thresholds_s is not None else cwm_thresholds()
        self.register_buffer("thresholds_s", torch.tensor(thr, dtype=torch.float32))
        self.log_tau = nn.Parameter(torch.tensor(math.log(self.tau_init_s / self.label_scale)))

    # ----- the exit process (scaled units) -----------------------------------------------------

    def mu_s(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Relevance logit and its spread per row."""
        return raw[:, 0], F.softplus(raw[:, 1]) + self.min_spread

    def _u(self, raw: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu - g(t)) / s`` at scaled times ``t`` ((n,) or (n, m)), and ``s``."""
        mu, s = self.mu_s(raw)
        tau = torch.exp(self.log_tau).to(raw.dtype)
        if t.dim() == 2:
            mu, s = mu.unsqueeze(1), s.unsqueeze(1)
        return (mu - log_expm1(t / tau)) / s, s

    def log_sf(self, raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``log S(t)``."""
        return F.logsigmoid(self._u(raw, t)[0])

    def log_density(self, raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``log(-S'(t))`` for ``t > 0``: ``log S + log(1 - S) + log g'(t) - log s``."""
        u, s = self._u(raw, t)
        tau = torch.exp(self.log_tau).to(raw.dtype)
        # g'(t) = 1 / (tau * (1 - exp(-t / tau)))
        log_g = -torch.log(tau) - torch.log(one_minus_exp(t / tau))
        return F.logsigmoid(u) + F.logsigmoid(-u) + log_g - torch.log(s)

    def targets(self, duration_ms: np.ndarray, y_s: np.ndarray) -> torch.Tensor:
        """``[w / label_scale, completed]``: completed = a play reaching the video's end."""
        d = np.asarray(duration_ms, dtype=np.float64)
        y = np.asarray(y_s, dtype=np.float64)
        done = known_duration(d) & (y * 1000.0 >= np.where(known_duration(d), d, np.inf))
        return torch.from_numpy(np.stack([y / self.label_scale, done], axis=1).astype(np.float32))

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean negative counterfactual log-likelihood; ``y`` is :meth:`targets`' pair."""
        w, done = y[:, 0].to(raw.dtype), y[:, 1] > 0.5
        zero = w <= 0
        safe = torch.where(zero, torch.ones_like(w), w)
        window = torch.full_like(w, self.zero_window_s / self.label_scale)
        exit_seen = self.log_density(raw, safe)
        censored = self.log_sf(raw, safe)
        # log(1 - S(window)) = log sigmoid(-u)
        quick = F.logsigmoid(-self._u(raw, window)[0])
        ll = torch.where(zero, quick, torch.where(done, censored, exit_seen))
        return -ll.mean()

    # ----- served family -----------------------------------------------------------------------

    def served_sf(self, raw: torch.Tensor) -> torch.Tensor:
        """``S`` at the thresholds, with a floor share of a decreasing reference (see cread)."""
        thr: torch.Tensor = self.thresholds_s  # type: ignore[assignment]
        t = (thr.to(raw.dtype) / self.label_scale).unsqueeze(0).expand(raw.shape[0], -1)
        m = thr.shape[0]
        ref = 1.0 - torch.arange(1, m + 1, dtype=raw.dtype) / (m + 1)
        return (1.0 - self.floor) * torch.sigmoid(self._u(raw, t)[0]) + self.floor * ref

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        thr: torch.Tensor = self.thresholds_s  # type: ignore[assignment]
        return per_row(thr.to(raw.dtype), raw), self.served_sf(raw)

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        thr: torch.Tensor = self.thresholds_s  # type: ignore[assignment]
        return survival_mean(self.served_sf(raw), thr.to(raw.dtype))

    def output_names(self) -> list[str]:
        return ["thresholds", "sf"]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {
            "thresholds_s": [float(v) for v in self.thresholds_s],  # type: ignore[union-attr]
            "tau_s": float(torch.exp(self.log_tau.detach())) * self.label_scale,
            "zero_window_s": self.zero_window_s,
            "min_spread": self.min_spread,
            "floor": self.floor,
            "exit_process": "S(t) = sigmoid((mu - log(expm1(t / tau))) / s), "
            "cost c(t) = 1 - exp(-t / tau), relevance r = sigmoid(mu)",
        }
