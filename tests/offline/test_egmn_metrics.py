"""Offline metrics against brute-force and closed-form references."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.evaluation.metrics import coverage, crps, mae, roc_auc, xauc
from service.distributions import EGM


def _brute_xauc(p: np.ndarray, y: np.ndarray) -> float:
    num = den = 0.0
    for i in range(len(y)):
        for j in range(len(y)):
            if y[i] > y[j]:
                den += 1
                num += 1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0
    return num / den


@pytest.mark.parametrize("seed", range(4))
def test_xauc_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, 150).astype(float)
    p = rng.integers(0, 6, 150).astype(float) + 0.1 * y * (seed % 2)
    assert xauc(p, y) == pytest.approx(_brute_xauc(p, y), abs=1e-12)


def test_xauc_extremes() -> None:
    y = np.arange(50.0)
    assert xauc(y, y) == 1.0
    assert xauc(-y, y) == 0.0
    assert xauc(np.zeros(50), y) == 0.5


def test_roc_auc_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    s = rng.integers(0, 10, 300).astype(float)
    pos = rng.random(300) < 0.4
    pairs = [(a, b) for a in s[pos] for b in s[~pos]]
    want = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert roc_auc(s, pos) == pytest.approx(want, abs=1e-12)


def _pure_exponential(lam: np.ndarray) -> EGM:
    n = lam.size
    return EGM.from_params(
        {
            "lambda": lam,
            "weights": np.c_[np.ones(n), np.zeros(n)],
            "mu": np.ones((n, 1)),
            "sigma": np.ones((n, 1)),
        }
    )


def test_crps_of_an_exponential_has_a_closed_form() -> None:
    rng = np.random.default_rng(0)
    lam = rng.uniform(0.05, 2.0, 400)
    y = rng.exponential(1 / lam)
    # CRPS(Exp(lam), y) = y + 2 exp(-lam y) / lam - 3 / (2 lam)
    want = np.mean(y + 2 * np.exp(-lam * y) / lam - 1.5 / lam)
    assert crps(_pure_exponential(lam), y, chunk=97) == pytest.approx(want, rel=2e-3)


def test_coverage_and_mae() -> None:
    lam = np.full(20_000, 0.5)
    y = np.random.default_rng(1).exponential(2.0, 20_000)
    cov = coverage(_pure_exponential(lam), y, (0.1, 0.5, 0.9))
    for level in (0.1, 0.5, 0.9):
        assert cov[f"coverage_{level:g}"] == pytest.approx(level, abs=0.015)
    assert mae(np.array([1.0, 2.0]), np.array([2.0, 0.0])) == 1.5
