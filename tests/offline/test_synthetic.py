"""EGMN on synthetic logs whose true density is known: it must come close to the truth.

Reached on a 2-core machine (10,000 held-out rows): faithful EGMN loss (alpha 0.1, beta 1)
0.091 nats per row above the true density's NLL, pure likelihood (alpha = beta = 0) 0.022. The
L1 term pulls the paper's point towards the median and so costs some likelihood by design.
For scale: scoring each row with another row's true density costs about 0.6 nats.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from model_export.data.features import fit_features
from model_export.data.prepared import encode
from model_export.data.synthetic import SYNTHETIC_FEATURES, generate, sample_egm
from model_export.models.egmn import ServingEGMN
from model_export.training.config import TrainConfig
from model_export.training.egmn import predict_distribution, train_egmn
from service.distributions import EGM


def _nll(dist: EGM, y: np.ndarray) -> float:
    return float(-dist.log_prob(y[:, None])[:, 0].mean())


def test_generator_draws_from_its_declared_density() -> None:
    data = generate(40_000, seed=7)
    truth = EGM.from_params(data.params)
    y = data.y
    # Probability integral transform: F(y) of the continuous draws is uniform.
    pit = truth.cdf(y[:, None])[:, 0]
    cont = y > 0
    grid = np.linspace(0.05, 0.95, 19)
    p0 = data.params["p0"][cont]
    share = [(pit[cont] - p0 <= q * (1 - p0)).mean() for q in grid]
    np.testing.assert_allclose(share, grid, atol=0.01)
    assert np.mean(y == 0) == pytest.approx(0.08, abs=0.006)
    # Several modes and a pile near zero, as on the real logs.
    assert np.mean(y <= 3) > 0.25


def test_sampler_matches_a_single_truncated_gaussian() -> None:
    n = 50_000
    params = {
        "lambda": np.ones(n),
        "weights": np.c_[np.zeros(n), np.ones(n)],
        "mu": np.full((n, 1), 0.5),
        "sigma": np.ones((n, 1)),
        "p0": np.zeros(n),
    }
    y = sample_egm(params, np.random.default_rng(0))
    assert y.min() >= 0
    want = stats.truncnorm(a=-0.5, b=np.inf, loc=0.5, scale=1.0)
    assert y.mean() == pytest.approx(want.mean(), abs=0.01)
    assert y.std() == pytest.approx(want.std(), abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize(("alpha", "beta", "max_gap"), [(0.1, 1.0, 0.15), (0.0, 0.0, 0.06)])
def test_egmn_comes_close_to_the_true_density(alpha: float, beta: float, max_gap: float) -> None:
    train, validation, test = (
        generate(30_000, seed=1),
        generate(7_500, seed=2),
        generate(10_000, seed=3),
    )
    fitted = fit_features(train.frame, SYNTHETIC_FEATURES)
    enc = [encode(fitted, d.frame) for d in (train, validation, test)]
    config = TrainConfig(
        point_mass=True,
        n_gaussians=3,
        embedding_dim=8,
        hidden=(64, 32),
        dropout=0.0,
        alpha=alpha,
        beta=beta,
        batch_size=512,
        lr=3e-3,
        max_epochs=40,
        patience=3,
        num_threads=1,
    )
    model, _ = train_egmn(enc[0], enc[1], fitted.cardinalities, fitted.numeric_width, config, False)
    dist = predict_distribution(ServingEGMN(model, None, config.label_scale), enc[2])
    y = test.y
    true_nll = _nll(EGM.from_params(test.params), y)
    gap = _nll(dist, y) - true_nll
    print(f"alpha={alpha} beta={beta}: model NLL - true NLL = {gap:.4f} nats/row")
    assert -0.02 < gap < max_gap
    shuffled = {k: np.roll(v, 1, axis=0) for k, v in test.params.items()}
    assert _nll(EGM.from_params(shuffled), y) - true_nll > 4 * max_gap
