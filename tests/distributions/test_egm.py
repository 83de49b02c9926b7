"""EGM against references assembled by hand from scipy.stats, and Monte Carlo samples."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st
from scipy.optimize import brentq

from service.distributions import EGM, ParameterError, get_family

K = 10


def random_params(n: int, seed: int, p0: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.dirichlet(np.ones(K + 2), n)
    params = {
        "lambda": rng.lognormal(np.log(0.5), 0.8, n),
        "weights": raw[:, 1:] if p0 else raw[:, 1:] / raw[:, 1:].sum(1, keepdims=True),
        "mu": rng.normal(15, 25, (n, K)),
        "sigma": rng.lognormal(1.5, 1.0, (n, K)),
    }
    if p0:
        params["p0"] = raw[:, 0]
    return params


class Reference:
    """The same mixture, one row at a time, from scipy.stats components."""

    def __init__(self, params: dict[str, np.ndarray], i: int) -> None:
        self.p0 = float(params["p0"][i]) if "p0" in params else 0.0
        self.w = params["weights"][i]
        self.expo = st.expon(scale=1.0 / params["lambda"][i])
        mu, sigma = params["mu"][i], params["sigma"][i]
        # all K components as one vectorized frozen scipy distribution
        self.tn = st.truncnorm(-mu / sigma, np.inf, loc=mu, scale=sigma)
        self.gauss = [
            st.truncnorm(-m / s, np.inf, loc=m, scale=s) for m, s in zip(mu, sigma, strict=True)
        ]

    def cdf(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        out = self.p0 + self.w[0] * self.expo.cdf(t) + self.tn.cdf(t[..., None]) @ self.w[1:]
        return np.where(t < 0, 0.0, out)

    def pdf(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        return self.w[0] * self.expo.pdf(t) + self.tn.pdf(t[..., None]) @ self.w[1:]

    def moment(self, k: int) -> float:
        out = self.w[0] * self.expo.moment(k)
        for wk, g in zip(self.w[1:], self.gauss, strict=True):
            out += wk * g.moment(k)
        return float(out)

    def ppf(self, q: float) -> float:
        if q <= self.p0:
            return 0.0
        return brentq(lambda x: float(self.cdf(np.array(x))) - q, 0.0, 1e7, xtol=1e-13, rtol=1e-15)


@pytest.fixture(params=[False, True], ids=["no-atom", "atom"])
def case(request: pytest.FixtureRequest) -> tuple[dict[str, np.ndarray], EGM, list[Reference]]:
    params = random_params(12, seed=7, p0=request.param)
    refs = [Reference(params, i) for i in range(12)]
    return params, EGM.from_params(params), refs


def test_cdf_and_log_prob_match_scipy(case: tuple) -> None:
    _, dist, refs = case
    t = np.array([0.0, 1e-6, 0.3, 3.0, 10.0, 47.5, 300.0])
    cdf = dist.cdf(t)
    logp = dist.log_prob(t[1:])
    for i, ref in enumerate(refs):
        np.testing.assert_allclose(cdf[i], ref.cdf(t), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(logp[i], np.log(ref.pdf(t[1:])), rtol=1e-11)


def test_log_prob_at_zero_is_the_atom_when_there_is_one(case: tuple) -> None:
    _, dist, refs = case
    lp0 = dist.log_prob(0.0)
    for i, ref in enumerate(refs):
        expected = np.log(ref.p0) if ref.p0 > 0 else np.log(ref.pdf(np.array(0.0)))
        assert lp0[i] == pytest.approx(expected, rel=1e-12)


def test_mean_and_variance_match_scipy_moments(case: tuple) -> None:
    _, dist, refs = case
    mean, var = dist.mean(), dist.variance()
    for i, ref in enumerate(refs):
        m1, m2 = (1 - ref.p0) * 0 + ref.moment(1), ref.moment(2)
        assert mean[i] == pytest.approx(m1, rel=1e-10)
        assert var[i] == pytest.approx(m2 - m1**2, rel=1e-9)
    np.testing.assert_allclose(dist.stddev(), np.sqrt(var))


def test_point_is_the_papers_formula_not_the_mean(case: tuple) -> None:
    params, dist, _ = case
    total = params["weights"].sum(1) + params.get("p0", 0.0)
    w = params["weights"] / total[:, None]
    paper = w[:, 0] / params["lambda"] + (w[:, 1:] * params["mu"]).sum(1)
    np.testing.assert_allclose(dist.point(), paper, rtol=1e-13)
    assert not np.allclose(dist.point(), dist.mean())


def test_quantiles_match_brentq(case: tuple) -> None:
    _, dist, refs = case
    levels = np.array([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999])
    q = dist.icdf(levels)
    for i, ref in enumerate(refs):
        for j, level in enumerate(levels):
            expected = ref.ppf(level)
            assert abs(q[i, j] - expected) <= max(1e-4, 1e-6 * expected), (i, level)


def test_levels_inside_the_atom_give_zero() -> None:
    params = random_params(5, seed=3, p0=True)
    params["p0"] = np.full(5, 0.3)
    params["weights"] = params["weights"] / params["weights"].sum(1, keepdims=True) * 0.7
    q = EGM.from_params(params).icdf(np.array([0.1, 0.3, 0.31]))
    assert (q[:, :2] == 0).all()
    assert (q[:, 2] > 0).all()


def test_interval_mass_and_partition(case: tuple) -> None:
    _, dist, refs = case
    edges = np.array([[0.0, 3.0], [3.0, 10.0], [10.0, np.inf]])
    mass = dist.interval_mass(edges)
    np.testing.assert_allclose(mass.sum(1), 1.0, atol=1e-12)
    for i, ref in enumerate(refs):
        c3, c10 = ref.cdf(np.array([3.0, 10.0]))
        np.testing.assert_allclose(mass[i], [c3, c10 - c3, 1 - c10], atol=1e-13)
    np.testing.assert_allclose(dist.quick_skip_prob(3.0), mass[:, 0], atol=1e-15)


def test_per_row_points_and_shapes(case: tuple) -> None:
    _, dist, _ = case
    n = dist.n
    per_row = np.linspace(0.5, 20.0, n)[:, None] * np.array([1.0, 2.0])
    out = dist.cdf(per_row)
    assert out.shape == (n, 2)
    for i in range(n):
        np.testing.assert_allclose(out[i], dist.cdf(per_row[i])[i], rtol=1e-14)
    assert dist.cdf(3.0).shape == (n,)
    assert dist.icdf(0.5).shape == (n,)
    levels = np.tile([0.2, 0.8], (n, 1))
    np.testing.assert_allclose(dist.icdf(levels), dist.icdf(np.array([0.2, 0.8])))
    thr = np.linspace(1, 5, n)
    np.testing.assert_allclose(dist.quick_skip_prob(thr), dist.cdf(thr[:, None])[:, 0])
    edges = np.broadcast_to(np.array([[0.0, 3.0], [3.0, np.inf]]), (n, 2, 2))
    np.testing.assert_allclose(dist.interval_mass(edges).sum(1), 1.0, atol=1e-12)
    with pytest.raises(ValueError):
        dist.cdf(np.ones((n + 1, 2)))
    with pytest.raises(ValueError):
        dist.cdf(np.array([np.nan]))
    with pytest.raises(ValueError):
        dist.icdf(np.array([1.5]))
    with pytest.raises(ValueError):
        dist.interval_mass(np.array([[5.0, 3.0]]))


def test_rows_do_not_depend_on_their_batch() -> None:
    params = random_params(40, seed=11, p0=True)
    levels = np.array([0.05, 0.5, 0.95])
    whole = EGM.from_params(params).icdf(levels)
    rows = np.array([3, 17, 29])
    part = EGM.from_params({k: v[rows] for k, v in params.items()}).icdf(levels)
    np.testing.assert_allclose(part, whole[rows], rtol=1e-9, atol=1e-6)


def test_monte_carlo_samples_agree() -> None:
    """Draw from the mixture with numpy/scipy samplers and compare moments and CDF."""
    rng = np.random.default_rng(5)
    params = random_params(3, seed=21, p0=True)
    dist = EGM.from_params(params)
    draws = 200_000
    for i in range(3):
        p = np.concatenate([[params["p0"][i]], params["weights"][i]])
        comp = rng.choice(K + 2, size=draws, p=p / p.sum())
        x = np.zeros(draws)
        ex = comp == 1
        x[ex] = rng.exponential(1.0 / params["lambda"][i], ex.sum())
        for k in range(K):
            sel = comp == k + 2
            m, s = params["mu"][i, k], params["sigma"][i, k]
            x[sel] = st.truncnorm.rvs(
                -m / s, np.inf, loc=m, scale=s, size=sel.sum(), random_state=rng
            )
        se = x.std() / np.sqrt(draws)
        assert abs(dist.mean()[i] - x.mean()) < 5 * se
        t = np.array([0.0, 1.0, 5.0, 20.0, 60.0])
        emp = (x[:, None] <= t).mean(0)
        assert np.max(np.abs(dist.cdf(t)[i] - emp)) < 5 * np.sqrt(0.25 / draws)


def one_hot(n: int, j: int) -> np.ndarray:
    w = np.zeros((n, K + 1))
    w[:, j] = 1.0
    return w


def test_extreme_rates_are_finite_and_exact() -> None:
    lam = np.array([1e-12, 1e-3, 1.0, 1e6, 1e12])
    n = lam.size
    dist = EGM.from_params(
        {"lambda": lam, "weights": one_hot(n, 0), "mu": np.ones((n, K)), "sigma": np.ones((n, K))}
    )
    np.testing.assert_allclose(dist.mean(), 1 / lam, rtol=1e-14)
    np.testing.assert_allclose(dist.stddev(), 1 / lam, rtol=1e-7)
    q = dist.icdf(np.array([0.1, 0.5, 0.9]))
    exact = -np.log1p(-np.array([0.1, 0.5, 0.9])) / lam[:, None]
    # the stated tolerance: 1e-6 s absolute or 1e-9 relative
    assert (np.abs(q - exact) <= 1e-6 + 1e-9 * exact).all()
    assert np.isfinite(dist.log_prob(np.array([0.0, 1.0, 1e3]))).all()


def test_gaussian_far_below_zero_becomes_exponential() -> None:
    """A normal truncated far in its right tail is asymptotically Exp(rate=|mu|/sigma**2)."""
    mu = np.array([-50.0, -1e3, -1e6, -1e9])
    sigma = np.ones_like(mu)
    n = mu.size
    w = one_hot(n, 1)
    dist = EGM.from_params(
        {
            "lambda": np.ones(n),
            "weights": w,
            "mu": np.repeat(mu[:, None], K, 1),
            "sigma": np.repeat(sigma[:, None], K, 1),
        }
    )
    rate = -mu / sigma**2
    a = -mu / sigma
    # scipy's truncnorm where it is reliable (it drifts by 1e-5 at a = 1e3); past it the
    # asymptotic Mills series, whose first omitted term is 74/a**7 relative.
    expected_mean = np.concatenate(
        [
            [st.truncnorm(a[0], np.inf, loc=mu[0], scale=1.0).mean()],
            sigma[1:] * (1 / a[1:] - 2 / a[1:] ** 3 + 10 / a[1:] ** 5),
        ]
    )
    np.testing.assert_allclose(dist.mean(), expected_mean, rtol=1e-9)
    assert np.isfinite(dist.variance()).all() and (dist.variance() > 0).all()
    med = dist.icdf(0.5)
    # asymptotic exponential median, to the solver's stated 1e-6 s absolute tolerance
    np.testing.assert_allclose(med, np.log(2) / rate, rtol=1e-3, atol=1e-6)
    for arr in (dist.cdf(np.array([0.0, 1e-9, 1.0])), dist.log_prob(np.array([1e-12]))):
        assert np.isfinite(arr).all()


def test_tiny_sigma_is_a_spike_at_mu() -> None:
    n = 3
    mu = np.full((n, K), 7.0)
    dist = EGM.from_params(
        {"lambda": np.ones(n), "weights": one_hot(n, 4), "mu": mu, "sigma": np.full((n, K), 1e-9)}
    )
    np.testing.assert_allclose(dist.mean(), 7.0, rtol=1e-12)
    # within the stated tolerance (1e-6 s absolute) of the spike
    np.testing.assert_allclose(dist.icdf(np.array([0.01, 0.5, 0.99])), 7.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(dist.cdf(np.array([6.999, 7.001])), [[0.0, 1.0]] * n)


def test_zero_weights_and_degenerate_atom() -> None:
    params = random_params(4, seed=2, p0=True)
    params["weights"][:, 3:] = 0.0
    params["p0"] = np.array([0.0, 0.5, 0.999, 1e-300])
    params["weights"] *= ((1 - params["p0"]) / params["weights"].sum(1))[:, None]
    dist = EGM.from_params(params)
    for arr in (
        dist.mean(),
        dist.stddev(),
        dist.icdf(np.array([0.1, 0.5, 0.9999])),
        dist.cdf(np.array([0.0, 1.0, 1e9])),
        dist.log_prob(np.array([0.0, 2.0])),
    ):
        assert np.isfinite(arr).all()
    assert dist.icdf(0.9)[2] == 0.0


@pytest.mark.parametrize(
    "change",
    [
        {"lambda": np.array([np.nan, 1.0])},
        {"lambda": np.array([-1.0, 1.0])},
        {"sigma": np.zeros((2, K))},
        {"mu": np.ones((2, K + 1))},
        {"weights": -np.ones((2, K + 1))},
        {"p0": np.array([1.0, 0.0])},
        {"extra": np.ones(2)},
    ],
)
def test_garbage_parameters_are_refused(change: dict[str, np.ndarray]) -> None:
    params = random_params(2, seed=1)
    params.update(change)
    with pytest.raises(ParameterError):
        get_family("egm").from_params(params)


def test_missing_parameter_is_refused() -> None:
    params = random_params(2, seed=1)
    del params["sigma"]
    with pytest.raises(ParameterError):
        EGM.from_params(params)


def test_small_level_under_a_half_normal_at_zero() -> None:
    """A level far below the grid: the search must not stop on a small bisection step."""
    params = {
        "lambda": np.array([1 / 64]),
        "weights": np.array([[1 / 17, 0.0, 16 / 17]]),
        "mu": np.zeros((1, 2)),
        "sigma": np.array([[1.0, 0.5]]),
    }
    dist = EGM.from_params(params)
    level = 6.587e-4
    ref = Reference(params, 0).ppf(level)
    assert dist.icdf(level)[0] == pytest.approx(ref, rel=1e-6)


def test_float32_start_is_polished_to_float64_accuracy() -> None:
    # Level 1 - 1e-9 rounds to 1 in float32 and 1e-7 is below float32's resolution of the
    # CDF near the bulk, so the float32 start alone cannot place them; the float64 search
    # must.
    n = 200
    params = random_params(n, seed=11)
    dist = EGM.from_params(params)
    levels = np.array([1e-7, 0.37, 1.0 - 1e-9])
    got = dist.icdf(levels)
    for i in range(0, n, 40):
        ref = Reference(params, i)
        for j, level in enumerate(levels):
            expected = ref.ppf(level)
            assert abs(got[i, j] - expected) <= 1e-4 + 1e-6 * expected, (i, level)
    # The float32 kernel alone is off by more than the tolerance at the exact roots of
    # the extreme levels: one of its Newton steps from there moves by more than 1e-6.
    exact = np.array([[Reference(params, 0).ppf(q) for q in levels]])
    one = dist.take(np.array([0]))
    f32_cdf, f32_pdf = one.cdf_pdf32(exact.astype(np.float32))
    step = (f32_cdf.astype(np.float64) - levels) / (f32_pdf * exact)
    assert np.abs(step[0, [0, 2]]).max() > 1e-6


def test_float32_slope_kernel_matches_float64_derivatives() -> None:
    """The density's derivative behind the start's Halley steps, against finite differences
    of the float64 density (and the float32 CDF and density against float64)."""
    n = 50
    dist = EGM.from_params(random_params(n, seed=23))
    t = np.exp(np.random.default_rng(3).uniform(np.log(0.05), np.log(300.0), size=(n, 4)))
    cdf32, pdf32, dpdf32 = dist.cdf_pdf_dpdf32(t.astype(np.float32))
    cdf, pdf = dist.cdf_pdf(t)
    h = 1e-5 * t
    _, pdf_up = dist.cdf_pdf(t + h)
    _, pdf_down = dist.cdf_pdf(t - h)
    slope = (pdf_up - pdf_down) / (2 * h)
    scale = np.abs(slope).max(axis=1, keepdims=True)
    excess = np.abs(dpdf32 - slope) / (1e-3 * np.abs(slope) + 1e-4 * scale)
    assert excess.max() <= 1.0, excess.max()
    np.testing.assert_allclose(cdf32, cdf, atol=2e-6)
    np.testing.assert_allclose(pdf32, pdf, rtol=1e-4, atol=1e-7)


def test_quantiles_below_the_cdf_resolution_stay_in_level_order() -> None:
    """Levels of 1e-64 and 3e-27 under a mode at 5 s: the CDF is 0 in double precision up
    to about 0.85 s, so any point there solves both; they must still come back in order."""
    d = EGM.from_params(
        {
            "lambda": [1.0, 1.0],
            "weights": [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]],
            "mu": [[0.0, 5.0], [0.0, 0.0]],
            "sigma": [[1.0, 0.5], [1.0, 1.0]],
        }
    )
    levels = np.array([3.4595008249290826e-27, 1.0759776714504657e-64, 0.5, 1e-300])
    x = d.icdf(levels)
    order = np.argsort(levels)
    assert (np.diff(x[:, order], axis=1) >= 0).all(), x
    # each is still a quantile to the CDF's own precision: P(T <= x + 1e-4) reaches the level
    assert (d.cdf(x + 1e-4) >= levels).all()


def _spiky_params(n: int, seed: int) -> dict[str, np.ndarray]:
    """Mixtures with one narrow, heavy Gaussian (about 0.5 to 4 % of its mean wide, a
    quarter to a half of the mass), as a duration-anchored EGMN emits for the full views:
    levels inside that peak are where a few float32 steps bounce across it."""
    rng = np.random.default_rng(seed)
    params = random_params(n, seed=seed, p0=True)
    centre = rng.lognormal(np.log(30.0), 1.0, n)
    params["mu"][:, -1] = centre
    params["sigma"][:, -1] = centre * rng.uniform(0.005, 0.04, n)
    heavy = rng.uniform(0.25, 0.5, n)
    rest = params["weights"][:, :-1]
    rest *= ((1.0 - params["p0"] - heavy) / rest.sum(axis=1))[:, None]
    params["weights"][:, -1] = heavy
    return params


def test_levels_inside_a_narrow_peak_match_scipy_and_their_row_alone() -> None:
    n = 120
    params = _spiky_params(n, seed=29)
    dist = EGM.from_params(params)
    refs = [Reference(params, i) for i in range(n)]
    # levels placed inside each row's peak: its CDF at the peak's centre, and either side
    inside = np.array([float(r.cdf(np.array(params["mu"][i, -1]))) for i, r in enumerate(refs)])
    levels = np.clip(inside[:, None] + np.array([-0.1, 0.0, 0.1]), 0.01, 0.99)
    got = dist.icdf(levels)
    for i in range(0, n, 7):
        for j in range(3):
            want = refs[i].ppf(levels[i, j])
            assert abs(got[i, j] - want) <= 1e-4 + 1e-6 * want, (i, levels[i, j])
    # a row's answer does not depend on the rows it is solved with
    for i in range(0, n, 11):
        alone = dist.take(np.array([i])).icdf(levels[i : i + 1])
        np.testing.assert_array_equal(alone[0], got[i])
