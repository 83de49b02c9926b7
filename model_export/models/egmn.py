"""EGMN: embeddings, a pluggable backbone and the exponential-Gaussian mixture heads.

Faithful to the paper and its official code: 16-dim embedding per categorical feature, an MLP
backbone (256, 128, 64) with BatchNorm, ReLU and dropout 0.2, and heads on the hidden vector
``lambda = softplus_{beta=0.5}(linear) + 1e-6``, weights = softmax over K+1 logits (index 0 the
exponential), ``mu_k = softplus(linear) + 1/lambda``, ``sigma_k = softplus(linear) + 1e-6``.
The optional point mass ``p0`` adds one logit in front (index 0), so the softmax spans K+2.

The network works in scaled time units (seconds / ``label_scale``); :class:`ServingEGMN`
wraps it with the calibration and the conversion back to seconds for export.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from model_export.models.backbone import MLPBackbone
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
    ) -> None:
        super().__init__()
        self.point_mass = point_mass
        self.n_gaussians = n_gaussians
        self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_dim) for c in cardinalities)
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=0.05)
        in_dim = embedding_dim * len(cardinalities) + numeric_width
        self.backbone = backbone if backbone is not None else MLPBackbone(in_dim, hidden, dropout)
        h = int(getattr(self.backbone, "out_dim", hidden[-1]))
        self.lambda_head = nn.Linear(h, 1)
        self.weight_head = nn.Linear(h, n_gaussians + 1 + int(point_mass))
        self.mu_head = nn.Linear(h, n_gaussians)
        self.sigma_head = nn.Linear(h, n_gaussians)
        self.softplus_lambda = nn.Softplus(beta=0.5)

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> EGMParams:
        embedded = [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        hidden = self.backbone(torch.cat([*embedded, numeric], dim=1))
        lam = self.softplus_lambda(self.lambda_head(hidden)).squeeze(1) + 1e-6
        log_w = torch.log_softmax(self.weight_head(hidden), dim=1)
        mu = nn.functional.softplus(self.mu_head(hidden)) + (1.0 / lam).unsqueeze(1)
        sigma = nn.functional.softplus(self.sigma_head(hidden)) + 1e-6
        return EGMParams(lam=lam, log_w=log_w, mu=mu, sigma=sigma, point_mass=self.point_mass)


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
        if self.model.point_mass:
            return lam, w[:, 1:], mu, sigma, w[:, 0]
        return lam, w, mu, sigma

    def output_names(self) -> list[str]:
        """ONNX output names, equal to the EGM family's parameter names."""
        names = ["lambda", "weights", "mu", "sigma"]
        return [*names, "p0"] if self.model.point_mass else names
