"""The EGM log-likelihood and point prediction in torch, for training.

The served arithmetic lives in ``service.distributions.EGM`` (numpy); this module only holds
what training needs to differentiate. Both follow the same conventions: weights are absolute
masses, component 0 of the continuous part is the exponential, each Gaussian is truncated to
[0, inf) and renormalised, and with a point mass the atom ``p0`` carries ``T == 0`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class EGMParams:
    """Per-row EGM parameters (in whatever time unit the caller uses).

    ``log_w`` holds log absolute masses: with a point mass its column 0 is ``log p0`` and the
    next column the exponential; without one, column 0 is the exponential.
    """

    lam: torch.Tensor
    log_w: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    point_mass: bool
    #: a point predicted by a head of its own (scaled units), when the model has one
    given: torch.Tensor | None = None

    @property
    def log_w_continuous(self) -> torch.Tensor:
        """Log masses of the exponential and the K Gaussians (absolute, not renormalised)."""
        return self.log_w[:, 1:] if self.point_mass else self.log_w


def component_log_density(params: EGMParams, y: torch.Tensor) -> torch.Tensor:
    """(n, K+1) log densities at y: the exponential then each truncated Gaussian."""
    yc = y.unsqueeze(1)
    log_exp = torch.log(params.lam) - params.lam * y
    z = (yc - params.mu) / params.sigma
    log_norm = torch.special.log_ndtr(params.mu / params.sigma)
    log_tn = -0.5 * z * z - torch.log(params.sigma) - _LOG_SQRT_2PI - log_norm
    return torch.cat([log_exp.unsqueeze(1), log_tn], dim=1)


def log_prob(params: EGMParams, y: torch.Tensor) -> torch.Tensor:
    """Log-likelihood per row; with a point mass, ``y == 0`` scores ``log p0`` (mixed measure)."""
    cont = torch.logsumexp(params.log_w_continuous + component_log_density(params, y), dim=1)
    if not params.point_mass:
        return cont
    return torch.where(y <= 0.0, params.log_w[:, 0], cont)


def cdf(params: EGMParams, y: torch.Tensor) -> torch.Tensor:
    """P(T <= y) per row, atom included."""
    yc = y.unsqueeze(1)
    w = torch.exp(params.log_w_continuous)
    expo = -torch.expm1(-params.lam * y)
    # Survival ratio in logs: stays finite where mu << 0 makes both tails underflow. The
    # standardized points are clipped to [-1e3, 30]: above 30 the float32 tail is exactly 1,
    # and far below, a collapsed (tiny-sigma) component would overflow log_ndtr's gradient.
    lo = (params.mu / params.sigma).clamp(-1e3, 30.0)
    hi = ((params.mu - yc) / params.sigma).clamp(-1e3, 30.0)
    log_sf = torch.special.log_ndtr(hi) - torch.special.log_ndtr(lo)
    gauss = -torch.expm1(log_sf.clamp_max(0.0))
    out = w[:, 0] * expo + (w[:, 1:] * gauss).sum(dim=1)
    if params.point_mass:
        out = out + torch.exp(params.log_w[:, 0])
    return out


def cdf_grid(params: EGMParams, t: torch.Tensor) -> torch.Tensor:
    """P(T <= t) on a per-row grid ``t`` (n, m), atom included: :func:`cdf`'s arithmetic."""
    w = torch.exp(params.log_w_continuous)
    expo = -torch.expm1(-params.lam.unsqueeze(1) * t)
    lo = (params.mu / params.sigma).clamp(-1e3, 30.0).unsqueeze(1)
    hi = ((params.mu.unsqueeze(1) - t.unsqueeze(2)) / params.sigma.unsqueeze(1)).clamp(-1e3, 30.0)
    log_sf = torch.special.log_ndtr(hi) - torch.special.log_ndtr(lo)
    gauss = -torch.expm1(log_sf.clamp_max(0.0))
    out = w[:, :1] * expo + (w[:, None, 1:] * gauss).sum(dim=2)
    if params.point_mass:
        out = out + torch.exp(params.log_w[:, :1])
    return out


CRPS_LOWER = 49
CRPS_UPPER = 97
CRPS_REACH = 2e3
"""The CRPS quadrature: ``CRPS_LOWER`` points on [0, y] (dense near 0), ``CRPS_UPPER`` on
[y, y + CRPS_REACH] (geometric steps from 1e-3), in the caller's units (scaled: 2e3 is
20,000 s, as far as the offline metric reaches)."""


def crps(params: EGMParams, y: torch.Tensor) -> torch.Tensor:
    """Per-row CRPS ``int_0^y F^2 dt + int_y^inf (1 - F)^2 dt`` by trapezoid.

    No closed form exists for a mixture of truncated Gaussians (the pairwise E|X - X'| of
    two of them is not one), so it is the offline metric's quadrature
    (:func:`model_export.evaluation.metrics.crps`) on a coarser grid, differentiable.
    """
    u = torch.linspace(0.0, 1.0, CRPS_LOWER, dtype=y.dtype) ** 2
    reach = torch.cat([torch.zeros(1, dtype=y.dtype), torch.logspace(-3.0, math.log10(CRPS_REACH), CRPS_UPPER - 1, dtype=y.dtype)])
    t_lo = y.unsqueeze(1) * u
    t_hi = y.unsqueeze(1) + reach
    below = torch.trapezoid(cdf_grid(params, t_lo) ** 2, t_lo, dim=1)
    above = torch.trapezoid((1.0 - cdf_grid(params, t_hi)) ** 2, t_hi, dim=1)
    return below + above


def soft_coverage(
    params: EGMParams, y: torch.Tensor, levels: torch.Tensor, temperature: float = 0.02
) -> torch.Tensor:
    """Smooth share of labels at or below each predicted quantile (one per level).

    ``y <= Q(q)`` is ``F(y) <= q`` for a label inside the continuous part; a label of 0 is
    always covered. The step is softened into a sigmoid so that it can be optimised.
    """
    f = cdf(params, y).unsqueeze(1)
    inside = torch.sigmoid((levels.unsqueeze(0) - f) / temperature)
    covered = torch.where((y <= 0.0).unsqueeze(1), torch.ones_like(inside), inside)
    return covered.mean(dim=0)


def point(params: EGMParams) -> torch.Tensor:
    """The point head's output when the model has one, else :func:`paper_point`."""
    return paper_point(params) if params.given is None else params.given


def paper_point(params: EGMParams) -> torch.Tensor:
    """The paper's point prediction ``w0/lambda + sum_k w_k mu_k`` (absolute weights)."""
    w = torch.exp(params.log_w_continuous)
    return w[:, 0] / params.lam + (w[:, 1:] * params.mu).sum(dim=1)


def neg_entropy(params: EGMParams) -> torch.Tensor:
    """Per-row ``sum_i w_i log w_i`` over all mixture masses (atom included when present)."""
    return (torch.exp(params.log_w) * params.log_w).sum(dim=1)


def egmn_loss(
    params: EGMParams,
    y: torch.Tensor,
    alpha: float = 0.1,
    beta: float = 1.0,
    crps_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EGMN's objective: NLL + alpha * sum(w log w) + beta * |point - y| (+ crps_weight *
    CRPS); returns (loss, nll). With a point head, the L1 term trains that head's point."""
    nll = -log_prob(params, y).mean()
    reg = neg_entropy(params).mean()
    l1 = (point(params) - y).abs().mean()
    loss = nll + alpha * reg + beta * l1
    if crps_weight:
        loss = loss + crps_weight * crps(params, y).mean()
    return loss, nll
