"""EGMN: embeddings, a pluggable backbone and the exponential-Gaussian mixture heads.

Faithful to the paper and its official code: 16-dim embedding per categorical feature, an MLP
backbone (256, 128, 64) with BatchNorm, ReLU and dropout 0.2, and heads on the hidden vector
``lambda = softplus_{beta=0.5}(linear) + 1e-6``, weights = softmax over K+1 logits (index 0 the
exponential), ``mu_k = softplus(linear) + 1/lambda``, ``sigma_k = softplus(linear) + 1e-6``.
The optional point mass ``p0`` adds one logit in front (index 0), so the softmax spans K+2.

Options (off by default): the trunk's (:class:`model_export.models.backbone.TrunkOptions`:
DCN-v2 cross layers, wider id embeddings, duration x user), and ``point_head``: a separate
head for the point (softplus of a linear map of the hidden vector), which the L1 term then
trains instead of the paper's eq. 12, so that the term no longer pulls the mixture; the
export emits it as the family's optional ``point``; and ``free_means``: ``mu_k =
softplus(linear)`` without the ``+ 1/lambda``, so that a Gaussian may sit below the
exponential's mean (the paper's order forces every Gaussian to the right of it, and with it
the mode of a 1-3 s view onto the exponential, whose density only falls); and
``duration_anchor``: the last Gaussian centred on the video's duration (see
:meth:`EGMN._anchored`).

The network works in scaled time units (seconds / ``label_scale``); :class:`ServingEGMN`
wraps it with the calibration and the conversion back to seconds for export.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from model_export.models.backbone import (
    DURATION_COLUMN,
    InputLayout,
    TrunkOptions,
    build_backbone,
)
from model_export.models.egm import EGMParams


class EGMN(nn.Module):
    """Features -> EGM parameters in scaled units."""

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        n_gaussians: int = 10,
        embedding_dim: int = 16,
        hidden: Sequence[int] = (256, 128, 64),
        dropout: float = 0.2,
        point_mass: bool = False,
        backbone: nn.Module | None = None,
        options: TrunkOptions | None = None,
        categorical_names: Sequence[str] = (),
        numeric_names: Sequence[str] = (),
        point_head: bool = False,
        free_means: bool = False,
        duration_anchor: bool = False,
        duration_log_ms: tuple[float, float] = (0.0, 1.0),
        label_scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.point_mass = point_mass
        self.free_means = free_means
        self.n_gaussians = n_gaussians
        opts = options if options is not None else TrunkOptions(embedding_dim=embedding_dim)
        self.layout = InputLayout(
            len(cardinalities), numeric_width, opts, categorical_names, numeric_names
        )
        self.embeddings = self.layout.embeddings(cardinalities)
        in_dim = self.layout.in_dim
        self.backbone = (
            backbone if backbone is not None else build_backbone(in_dim, hidden, dropout, opts)
        )
        h = int(getattr(self.backbone, "out_dim", hidden[-1]))
        self.lambda_head = nn.Linear(h, 1)
        self.weight_head = nn.Linear(h, n_gaussians + 1 + int(point_mass))
        self.mu_head = nn.Linear(h, n_gaussians)
        self.sigma_head = nn.Linear(h, n_gaussians)
        self.softplus_lambda = nn.Softplus(beta=0.5)
        self.point_head = nn.Linear(h, 1) if point_head else None
        self.anchor_index = -1
        self.anchor: nn.Linear | None = None
        if duration_anchor:
            if DURATION_COLUMN not in numeric_names:
                raise ValueError("duration_anchor needs the duration_ms column")
            self.anchor_index = list(numeric_names).index(DURATION_COLUMN)
            self.anchor = nn.Linear(h, 2)  # the mean's shift and the relative width
            mean, std = duration_log_ms
            self.register_buffer("duration_mean", torch.tensor(float(mean)))
            self.register_buffer("duration_std", torch.tensor(float(std)))
            self.label_scale = float(label_scale)

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> EGMParams:
        hidden = self.backbone(self.layout.x0(self.embeddings, categorical, numeric))
        lam = self.softplus_lambda(self.lambda_head(hidden)).squeeze(1) + 1e-6
        log_w = torch.log_softmax(self.weight_head(hidden), dim=1)
        mu = nn.functional.softplus(self.mu_head(hidden))
        if not self.free_means:
            mu = mu + (1.0 / lam).unsqueeze(1)
        sigma = nn.functional.softplus(self.sigma_head(hidden)) + 1e-6
        if self.anchor is not None:
            mu, sigma = self._anchored(numeric, hidden, mu, sigma)
        given = None
        if self.point_head is not None:
            given = nn.functional.softplus(self.point_head(hidden)).squeeze(1)
        return EGMParams(
            lam=lam, log_w=log_w, mu=mu, sigma=sigma, point_mass=self.point_mass, given=given
        )

    def _anchored(
        self, numeric: torch.Tensor, hidden: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The last Gaussian at the video's duration (within 10 %), as narrow as it needs:
        the full views' peak, which a mean computed from the hidden vector only finds
        roughly. The duration comes back from its standardised log input."""
        assert self.anchor is not None
        log_ms = numeric[:, self.anchor_index] * self.duration_std + self.duration_mean
        duration = (torch.exp(log_ms) - 1.0) / (1000.0 * self.label_scale)
        duration = torch.clamp(duration, min=1e-3)
        shift, width = self.anchor(hidden).unbind(dim=1)
        centre = duration * torch.exp(0.1 * torch.tanh(shift))
        spread = centre * (0.005 + nn.functional.softplus(width))
        mu = torch.cat([mu[:, :-1], centre.unsqueeze(1)], dim=1)
        sigma = torch.cat([sigma[:, :-1], spread.unsqueeze(1)], dim=1)
        return mu, sigma


class Calibration(nn.Module):
    """A post-hoc recalibration expressed in the EGM's own parameters.

    ``lambda' = lambda / exp(s_lambda)`` (stretches the exponential), ``sigma_k' = sigma_k *
    exp(s_k)`` (widens each Gaussian), and the mixture masses are re-weighted as
    ``softmax(log w / T + b)``. The identity at initialisation; fitted on the validation day
    only. The result is still an EGM, so the service serves exactly these parameters.
    """

    def __init__(self, n_gaussians: int, n_weights: int) -> None:
        super().__init__()
        self.log_lambda_scale = nn.Parameter(torch.zeros(()))
        self.log_sigma_scale = nn.Parameter(torch.zeros(n_gaussians))
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.weight_bias = nn.Parameter(torch.zeros(n_weights))

    def forward(self, p: EGMParams) -> EGMParams:
        log_w = torch.log_softmax(
            p.log_w * torch.exp(-self.log_temperature) + self.weight_bias, dim=1
        )
        return EGMParams(
            lam=p.lam * torch.exp(-self.log_lambda_scale),
            log_w=log_w,
            mu=p.mu,
            sigma=p.sigma * torch.exp(self.log_sigma_scale),
            point_mass=p.point_mass,
            given=p.given,
        )

    def summary(self) -> dict[str, float | list[float]]:
        """The fitted constants, for the manifest's informational extras."""
        with torch.no_grad():
            return {
                "calibration_lambda_scale": float(torch.exp(self.log_lambda_scale)),
                "calibration_sigma_scale": [float(v) for v in torch.exp(self.log_sigma_scale)],
                "calibration_weight_temperature": float(torch.exp(self.log_temperature)),
                "calibration_weight_bias": [float(v) for v in self.weight_bias],
            }


class ServingEGMN(nn.Module):
    """What is exported: EGMN -> calibration -> seconds, emitting the family's parameters."""

    def __init__(self, model: EGMN, calibration: Calibration | None, label_scale: float) -> None:
        super().__init__()
        self.model = model
        self.calibration = calibration
        self.label_scale = float(label_scale)

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = self.model(categorical, numeric)
        if self.calibration is not None:
            p = self.calibration(p)
        w = torch.exp(p.log_w)
        lam = p.lam / self.label_scale
        mu = p.mu * self.label_scale
        sigma = p.sigma * self.label_scale
        out: tuple[torch.Tensor, ...] = (lam, w[:, 1:], mu, sigma, w[:, 0])
        if not self.model.point_mass:
            out = (lam, w, mu, sigma)
        if p.given is not None:
            out = (*out, p.given * self.label_scale)
        return out

    def output_names(self) -> list[str]:
        """ONNX output names, equal to the EGM family's parameter names."""
        names = ["lambda", "weights", "mu", "sigma"]
        if self.model.point_mass:
            names.append("p0")
        if self.model.point_head is not None:
            names.append("point")
        return names
