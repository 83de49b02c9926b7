"""EGMN's torch likelihood, CDF and heads against scipy and the numpy EGM."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy import stats

from model_export.models.egm import EGMParams, cdf, egmn_loss, log_prob, point, soft_coverage
from model_export.models.egmn import EGMN, Calibration, ServingEGMN


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    """Compare against scipy in double precision; restore the default afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _random_params(n: int, k: int, point_mass: bool, seed: int = 0) -> EGMParams:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k + 1 + int(point_mass), generator=g)
    return EGMParams(
        lam=torch.rand(n, generator=g) * 2 + 0.05,
        log_w=torch.log_softmax(logits, dim=1),
        mu=torch.randn(n, k, generator=g) * 3 + 1.0,
        sigma=torch.rand(n, k, generator=g) * 2 + 0.1,
        point_mass=point_mass,
    )


def _scipy_density(p: EGMParams, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.exp(p.log_w.numpy())
    cont = w[:, 1:] if p.point_mass else w
    lam, mu, sigma = p.lam.numpy(), p.mu.numpy(), p.sigma.numpy()
    pdf = cont[:, 0] * stats.expon.pdf(y, scale=1 / lam)
    cdf_ = cont[:, 0] * stats.expon.cdf(y, scale=1 / lam)
    for k in range(mu.shape[1]):
        tn = stats.truncnorm(a=-mu[:, k] / sigma[:, k], b=np.inf, loc=mu[:, k], scale=sigma[:, k])
        pdf += cont[:, k + 1] * tn.pdf(y)
        cdf_ += cont[:, k + 1] * tn.cdf(y)
    if p.point_mass:
        cdf_ += w[:, 0]
    return pdf, cdf_


@pytest.mark.parametrize("point_mass", [False, True])
def test_log_prob_and_cdf_match_scipy(point_mass: bool) -> None:
    p = _random_params(200, 4, point_mass)
    y = np.random.default_rng(1).exponential(3.0, 200) + 1e-3
    pdf, cdf_ = _scipy_density(p, y)
    yt = torch.from_numpy(y)
    np.testing.assert_allclose(log_prob(p, yt).numpy(), np.log(pdf), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cdf(p, yt).numpy(), cdf_, rtol=1e-9, atol=1e-12)


def test_zero_label_scores_the_atom_only_with_a_point_mass() -> None:
    with_atom = _random_params(5, 3, True)
    zero = torch.zeros(5)
    np.testing.assert_allclose(log_prob(with_atom, zero), with_atom.log_w[:, 0])
    without = _random_params(5, 3, False)
    pdf, _ = _scipy_density(without, np.zeros(5))
    np.testing.assert_allclose(log_prob(without, zero).numpy(), np.log(pdf), rtol=1e-9)


def test_loss_terms() -> None:
    p = _random_params(50, 3, True)
    y = torch.rand(50) * 4
    w = torch.exp(p.log_w)
    want_point = w[:, 1] / p.lam + (w[:, 2:] * p.mu).sum(1)
    np.testing.assert_allclose(point(p), want_point)
    loss, nll = egmn_loss(p, y, alpha=0.1, beta=1.0)
    neg_entropy = (w * torch.log(w)).sum(1).mean()
    want = -log_prob(p, y).mean() + 0.1 * neg_entropy + (want_point - y).abs().mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-12)
    assert float(nll) == pytest.approx(float(-log_prob(p, y).mean()), rel=1e-12)


def test_soft_coverage_approaches_the_hard_share() -> None:
    p = _random_params(2000, 3, True, seed=3)
    y = torch.from_numpy(np.random.default_rng(2).exponential(2.0, 2000))
    y[:100] = 0.0
    levels = torch.tensor([0.1, 0.5, 0.9])
    soft = soft_coverage(p, y, levels, temperature=1e-4)
    f = cdf(p, y)
    hard = [float(((y <= 0) | (f <= q)).double().mean()) for q in levels]
    np.testing.assert_allclose(soft.numpy(), hard, atol=2e-3)


def test_heads_respect_the_paper_constraints() -> None:
    torch.manual_seed(0)
    model = EGMN([7, 5], 3, n_gaussians=10, point_mass=True).double().eval()
    cat = torch.stack([torch.randint(0, 7, (64,)), torch.randint(0, 5, (64,))], 1)
    num = torch.randn(64, 3)
    p = model(cat, num)
    assert p.log_w.shape == (64, 12)
    assert torch.all(p.mu >= 1 / p.lam.unsqueeze(1))
    assert torch.all(p.sigma > 0) and torch.all(p.lam > 0)
    np.testing.assert_allclose(torch.exp(p.log_w).sum(1).detach(), 1.0, rtol=1e-12)


def test_serving_converts_to_seconds_and_applies_calibration() -> None:
    torch.manual_seed(0)
    model = EGMN([4], 1, n_gaussians=3, point_mass=True).double().eval()
    cal = Calibration(3, 5).double()
    with torch.no_grad():
        cal.log_lambda_scale.fill_(0.3)
        cal.log_sigma_scale.copy_(torch.tensor([0.1, -0.2, 0.5]))
        cal.log_temperature.fill_(0.2)
        cal.weight_bias.copy_(torch.tensor([0.0, 0.5, -0.5, 0.1, 0.0]))
    cat, num = torch.randint(0, 4, (8, 1)), torch.randn(8, 1)
    with torch.no_grad():
        lam, weights, mu, sigma, p0 = ServingEGMN(model, cal, 10.0)(cat, num)
        raw = model(cat, num)
    np.testing.assert_allclose(lam, raw.lam * np.exp(-0.3) / 10.0, rtol=1e-12)
    np.testing.assert_allclose(mu, raw.mu * 10.0, rtol=1e-12)
    sigma_scale = torch.exp(cal.log_sigma_scale).detach()
    np.testing.assert_allclose(sigma, raw.sigma * sigma_scale * 10, rtol=1e-12)
    w = torch.softmax(raw.log_w / np.exp(0.2) + cal.weight_bias.detach(), 1)
    np.testing.assert_allclose(p0, w[:, 0], rtol=1e-12)
    np.testing.assert_allclose(weights, w[:, 1:], rtol=1e-12)
