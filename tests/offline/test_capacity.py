"""The featureless fits behind tuning.md's "What limits NLL y>0", against hand and scipy
references: the histogram's density by hand, the EGM fit against the true density of the
mixture it was sampled from, and the bound on the means costing what it must."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from model_export.evaluation.capacity import capacity, egm_nll, histogram_nll


def test_histogram_density_by_hand() -> None:
    edges = np.array([0.0, 1.0, 3.0, 7.0])
    train = np.array([0.5, 2.0, 2.5, 6.0, 100.0])  # 100 s counts in the last bucket
    # shares with half a view added: (1.5, 2.5, 2.5) / 6.5; widths 1, 2, 4
    test = np.array([0.2, 2.9, 50.0])
    want = -np.mean(np.log([1.5 / 6.5 / 1.0, 2.5 / 6.5 / 2.0, 2.5 / 6.5 / 4.0]))
    assert math.isclose(histogram_nll(train, test, edges), want, rel_tol=1e-12)


def _sample(n: int, seed: int) -> np.ndarray:
    """Views from 0.3 Exp(mean 20 s) + 0.7 N(1.5 s, 0.5 s) truncated at 0: a mode below the
    exponential's mean, where the paper's bound cannot put a Gaussian."""
    rng = np.random.default_rng(seed)
    expo = rng.exponential(20.0, n)
    gauss = stats.truncnorm.rvs(-3.0, np.inf, loc=1.5, scale=0.5, size=n, random_state=rng)
    return np.where(rng.random(n) < 0.3, expo, gauss)


def _true_nll(y: np.ndarray) -> float:
    density = 0.3 * stats.expon.pdf(y, scale=20.0) + 0.7 * stats.truncnorm.pdf(
        y, -3.0, np.inf, loc=1.5, scale=0.5
    )
    return float(-np.mean(np.log(density)))


def test_free_means_reach_the_true_density_and_the_bound_does_not() -> None:
    train, test = _sample(2000, 1), _sample(1000, 2)
    free = egm_nll(train, test, n_gaussians=3, steps=500)
    bound = egm_nll(train, test, n_gaussians=3, bound=True, steps=500)
    truth = _true_nll(test)
    assert abs(free - truth) < 0.05
    assert bound > free + 0.1


def test_capacity_weights_groups_by_rows_and_skips_tiny_ones() -> None:
    train = {"a": _sample(600, 3), "b": _sample(600, 4), "tiny": _sample(10, 5)}
    test = {"a": _sample(100, 6), "b": _sample(300, 7), "tiny": _sample(10, 8)}
    out = capacity(train, test, steps=50)
    assert set(out) == {"a", "b", "all"}
    for column in ("histogram", "egm_free", "egm_bound"):
        want = (out["a"][column] * 100 + out["b"][column] * 300) / 400
        assert math.isclose(out["all"][column], want, rel_tol=1e-12)


def test_the_tuning_report_section_says_what_the_figures_say() -> None:
    from model_export.evaluation.tuning_report import limits_section

    limits = {
        "a": {"rows": 10.0, "histogram": 3.0, "egm_free": 2.9, "egm_bound": 3.2},
        "all": {"rows": 10.0, "histogram": 3.0, "egm_free": 2.9, "egm_bound": 3.2},
    }
    results = {
        "beta0.5": {"calibrated": {"nll_positive": 3.6}},
        "beta0.5-anchor": {"calibrated": {"nll_positive": 3.45}},
    }
    text = limits_section(limits, results)
    assert "| a | 10 | 3.0000 | 2.9000 | 3.2000 |" in text
    assert "the bound costs 0.3000 nats" in text and "(2.9000 against 3.0000)" in text
    assert "(`beta0.5-anchor`) changed it by -0.1500" in text
    assert limits_section(None) == ""
