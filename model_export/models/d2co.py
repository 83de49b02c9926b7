"""``d2co``: debiased and denoised watch-time correction (Zhao et al., WWW 2023).

Watch time is read as a mixture, within each duration group, of a *noise* component (users
who take a few seconds to decide they do not like the video, whatever its duration) and a
*duration-biased* component (the watch time a video of that length gets when it is watched);
the user's interest is where the watch time sits between the two. Steps:

1. On the training days, per duration group (``n_groups`` equal-frequency groups of known
   durations, plus one for unknown durations), a two-component 1-D Gaussian mixture of the
   watch time (seconds, EM from the group's quartiles): the lower mean is the noise term
   ``mu_n``, the upper the bias term ``mu_b``. Both are smoothed over neighbouring groups by
   a frequency-weighted moving average (window ``2 * window + 1``, weights the groups' row
   counts).
2. The corrected label, a sensitivity-controlled correction:
   ``r = sigmoid(alpha * (w - c) / h)`` with ``c = (mu_n + mu_b) / 2`` and
   ``h = max((mu_b - mu_n) / 2, min_half_width)``; watch times at the noise mean map to
   ``sigmoid(-alpha)``, at the bias mean to ``sigmoid(alpha)``. ``alpha`` (the sensitivity)
   bounds how much an error in the two estimated means can move a label.

The network predicts the interest ``r_hat = sigmoid(raw)``, trained by binary cross-entropy
against the soft label ``r``. Back to seconds through the row's own group (in the graph): the
correction inverted at the prediction, ``loc = c + h * logit(r_hat) / alpha = c + h * raw /
alpha``. Served as a normal censored at 0 with ``loc`` and the spread ``scale = k * h`` (one
factor ``k`` fitted on the validation day by maximum likelihood, network frozen), so the
spread grows with the group's own scale; point ``max(loc, 0)``, as for ``vr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from model_export.models.duration import DurationHead, DurationInput, group_of_ms
from model_export.models.vr import fit_normal_scale


def gmm2(x: np.ndarray, iterations: int = 200, tol: float = 1e-9) -> tuple[np.ndarray, ...]:
    """A two-component 1-D Gaussian mixture by EM: (weights, means, sds), means ascending.

    Starts from the lower and upper quartiles with the sample spread; a floor on the spread
    (1e-3 of the sample's, at least 1e-3) keeps a component on a pile of equal values finite.
    """
    x = np.asarray(x, dtype=np.float64)
    spread = float(x.std()) if x.size > 1 else 1.0
    floor = max(1e-3 * spread, 1e-3)
    w = np.array([0.5, 0.5])
    mu = np.quantile(x, [0.25, 0.75]) if x.size else np.zeros(2)
    sd = np.full(2, max(spread, floor))
    previous = -np.inf
    for _ in range(iterations):
        z = (x[:, None] - mu[None, :]) / sd[None, :]
        logp = np.log(w)[None, :] - np.log(sd)[None, :] - 0.5 * z * z
        top = logp.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))
        resp = np.exp(logp - lse[:, None])
        n_k = resp.sum(axis=0) + 1e-12
        w = n_k / n_k.sum()
        mu = (resp * x[:, None]).sum(axis=0) / n_k
        sd = np.sqrt((resp * (x[:, None] - mu[None, :]) ** 2).sum(axis=0) / n_k)
        sd = np.maximum(sd, floor)
        ll = float(lse.mean())
        if ll - previous < tol:
            break
        previous = ll
    order = np.argsort(mu)
    return w[order], mu[order], sd[order]


def weighted_moving_average(values: np.ndarray, counts: np.ndarray, window: int) -> np.ndarray:
    """Each entry replaced by the count-weighted mean of its ``2 * window + 1`` neighbours."""
    out = np.empty_like(values, dtype=np.float64)
    for i in range(values.size):
        lo, hi = max(0, i - window), min(values.size, i + window + 1)
        weight = counts[lo:hi].astype(np.float64)
        out[i] = (
            float((weight * values[lo:hi]).sum() / weight.sum())
            if weight.sum() > 0
            else float(values[i])
        )
    return out


class D2Co(DurationHead):
    """``d2co``: interest regression on watch time corrected for duration bias and noise."""

    name = "d2co"
    family = "normal"
    n_groups_default: ClassVar[int] = 20
    sensitivity: ClassVar[float] = 2.0
    window: ClassVar[int] = 1
    min_half_width_s: ClassVar[float] = 0.5

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        duration: DurationInput,
        n_groups: int | None = None,
        **kw: object,
    ) -> None:
        groups = n_groups or self.n_groups_default
        super().__init__(cardinalities, numeric_width, 1, duration, groups, **kw)
        # Per group (0 = unknown duration): noise mean, bias mean (seconds); centre and
        # half-width of the correction; the validation-day spread factor.
        self.register_buffer("noise_s", torch.zeros(groups + 1))
        self.register_buffer("bias_s", torch.ones(groups + 1))
        self.register_buffer("scale_factor", torch.tensor(1.0))

    # ----- the correction ----------------------------------------------------------------------

    def _centre_half(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise: torch.Tensor = self.noise_s  # type: ignore[assignment]
        bias: torch.Tensor = self.bias_s  # type: ignore[assignment]
        centre = 0.5 * (noise + bias)
        half = torch.clamp(0.5 * (bias - noise), min=self.min_half_width_s)
        return centre[g], half[g]

    def corrected(self, y_s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The corrected interest label ``sigmoid(alpha (w - c) / h)`` of watch times (s)."""
        centre, half = self._centre_half(g)
        return torch.sigmoid(self.sensitivity * (y_s - centre.to(y_s.dtype)) / half.to(y_s.dtype))

    def fit_training_days(self, duration_ms: np.ndarray, y_s: np.ndarray) -> None:
        super().fit_training_days(duration_ms, y_s)
        g = group_of_ms(duration_ms, self.log_cuts.numpy())  # type: ignore[operator]
        k = self.n_groups + 1
        noise, bias, counts = np.zeros(k), np.ones(k), np.zeros(k)
        for j in range(k):
            y = np.asarray(y_s, dtype=np.float64)[g == j]
            counts[j] = y.size
            if y.size >= 10:
                _, mu, _ = gmm2(y)
                noise[j], bias[j] = mu
        # Groups too small for a fit borrow their neighbours' terms through the average.
        known = slice(1, k)
        noise[known] = weighted_moving_average(noise[known], counts[known], self.window)
        bias[known] = weighted_moving_average(bias[known], counts[known], self.window)
        if counts[0] < 10:
            noise[0], bias[0] = np.average(noise[1:], weights=counts[1:]), np.average(
                bias[1:], weights=counts[1:]
            )
        self.noise_s.copy_(torch.from_numpy(noise))  # type: ignore[operator]
        self.bias_s.copy_(torch.from_numpy(bias))  # type: ignore[operator]

    def targets(self, duration_ms: np.ndarray, y_s: np.ndarray) -> torch.Tensor:
        """Training targets: the corrected labels in (0, 1) (float32)."""
        g = torch.from_numpy(group_of_ms(duration_ms, self.log_cuts.numpy()))  # type: ignore[operator]
        return self.corrected(torch.from_numpy(np.asarray(y_s, dtype=np.float64)), g).float()

    # ----- loss, restoration, served family -------------------------------------------------------

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y`` here is the corrected label in (0, 1), not the watch time."""
        return F.binary_cross_entropy_with_logits(raw[:, 0], y)

    def loc_half(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The correction inverted at the prediction (seconds), and the group's half-width."""
        centre, half = self._centre_half(self.group(raw))
        centre, half = centre.to(raw.dtype), half.to(raw.dtype)
        return centre + half * raw[:, 0] / self.sensitivity, half

    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        return self.loc_half(raw)[0]

    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loc, half = self.loc_half(raw)
        factor: torch.Tensor = self.scale_factor  # type: ignore[assignment]
        return loc, factor.to(raw.dtype) * half

    def output_names(self) -> list[str]:
        return ["loc", "scale"]

    def fit_validation_day(self, raw: torch.Tensor, y_s: np.ndarray) -> None:
        """``k`` maximising the censored normal's likelihood with ``scale = k * h`` per row.

        Dividing a row's label, location and spread by its ``h`` leaves the censoring at 0 in
        place and changes its log-likelihood by ``-log h``, which does not depend on ``k``:
        the single-spread fit of ``vr`` on ``(loc / h, y / h)`` is this fit.
        """
        loc, half = (t.double().numpy() for t in self.loc_half(raw))
        self.scale_factor.fill_(fit_normal_scale(loc / half, np.asarray(y_s) / half))  # type: ignore[operator]

    def extras(self) -> dict[str, float | str | list[float]]:
        return {
            "n_duration_groups": float(self.n_groups),
            "sensitivity": self.sensitivity,
            "moving_average_window": float(2 * self.window + 1),
            "min_half_width_s": self.min_half_width_s,
            "log1p_duration_cuts": [float(v) for v in self.log_cuts],  # type: ignore[union-attr]
            "noise_s": [round(float(v), 4) for v in self.noise_s],  # type: ignore[union-attr]
            "bias_s": [round(float(v), 4) for v in self.bias_s],  # type: ignore[union-attr]
            "scale_factor": float(self.scale_factor),  # type: ignore[arg-type]
            "spread": "scale = scale_factor * half-width of the row's duration group, "
            "fitted on the validation day",
        }
