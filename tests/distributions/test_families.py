"""The baseline families against references built independently of the service code.

Each reference is assembled by hand from scipy.stats components (a censored normal is
``norm`` plus an atom, ZILN is ``lognorm`` plus an atom, the histogram is a mixture of
``uniform`` pieces and an ``expon`` tail, the survival curve is written out from its
definition), moments are checked by numerical integration of the survival function
and by Monte Carlo samples drawn with numpy, and quantiles by brentq on the reference
CDF. Nothing here compares the code with numbers it printed itself.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import pytest
import scipy.stats as st
from scipy.integrate import quad
from scipy.optimize import brentq

from service.distributions import (
    FAMILIES,
    ZILN,
    Distribution,
    Exponential,
    Histogram,
    Normal,
    ParameterError,
    Quantile,
    Survival,
    get_family,
)

Arr = npt.NDArray[np.float64]
Cdf = Callable[[float], float]

# Closed-form quantiles must beat the stated service tolerance (1e-4 s or 1e-6 rel).
Q_ABS, Q_REL = 1e-7, 1e-9
LEVELS = np.array([0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999])
N_MC = 400_000


def ref_quantile(cdf: Cdf, q: float, atom: float, hi: float) -> float:
    """Smallest t with cdf(t) >= q, by brentq on the reference CDF."""
    if q <= atom:
        return 0.0
    while cdf(hi) < q:
        hi *= 2.0
    return float(brentq(lambda t: cdf(t) - q, 0.0, hi, xtol=1e-13, rtol=1e-15, maxiter=500))


def ref_mean_var(sf: Cdf, breaks: list[float]) -> tuple[float, float]:
    """E[T] = int S, E[T^2] = 2 int t S, by quad of the survival function ``sf``."""
    pts = sorted({0.0, *breaks})
    m1 = m2 = 0.0
    for lo, hi in [*pairwise(pts), (pts[-1], np.inf)]:
        m1 += quad(sf, lo, hi, epsabs=0, epsrel=1e-10, limit=200)[0]
        m2 += quad(lambda t: 2 * t * sf(t), lo, hi, epsabs=0, epsrel=1e-10, limit=200)[0]
    return m1, m2 - m1 * m1


def assert_mc(samples: Arr, mean: float, var: float) -> None:
    """Sample mean and variance within 5 standard errors of the claimed moments."""
    n = samples.size
    se_mean = samples.std() / np.sqrt(n)
    centred = samples - samples.mean()
    se_var = np.sqrt(max(np.mean(centred**4) - np.var(samples) ** 2, 0.0) / n)
    assert abs(samples.mean() - mean) <= 5 * se_mean + 1e-12
    assert abs(samples.var() - var) <= 5 * se_var + 1e-12


def check_against(dist_row: Distribution, cdf: Cdf, atom: float, ts: Arr, hi: float) -> None:
    """CDF at ``ts`` and quantiles at LEVELS of a one-row distribution vs a reference."""
    got_cdf = dist_row.cdf(ts)[0]
    want_cdf = np.array([cdf(float(t)) for t in ts])
    np.testing.assert_allclose(got_cdf, want_cdf, rtol=1e-12, atol=1e-14)
    got_q = dist_row.icdf(LEVELS)[0]
    want_q = np.array([ref_quantile(cdf, float(q), atom, hi) for q in LEVELS])
    np.testing.assert_allclose(got_q, want_q, rtol=Q_REL, atol=Q_ABS)
    assert dist_row.atom()[0] == pytest.approx(atom, rel=1e-12, abs=1e-300)


def test_registry_holds_every_family() -> None:
    assert set(FAMILIES) == {
        "egm",
        "normal",
        "exponential",
        "ziln",
        "histogram",
        "survival",
        "quantile",
    }
    for cls in (Normal, Exponential, ZILN, Histogram, Survival, Quantile):
        assert get_family(cls.family) is cls


# ----- normal (censored at 0) ------------------------------------------------------------

NORMAL_CASES = [(3.0, 2.0), (-1.0, 1.5), (10.0, 0.7), (0.0, 5.0), (-4.0, 1.0)]


@pytest.mark.parametrize(("loc", "scale"), NORMAL_CASES)
def test_normal_vs_scipy(loc: float, scale: float) -> None:
    d = Normal(loc=np.array([loc]), scale=np.array([scale]))
    ref = st.norm(loc, scale)
    atom = float(ref.cdf(0.0))

    def cdf(t: float) -> float:
        return float(ref.cdf(t)) if t >= 0 else 0.0

    ts = np.array([0.0, 1e-3, 0.5, 1.0, 3.0, 7.5, 20.0])
    check_against(d, cdf, atom, ts, hi=abs(loc) + 10 * scale)
    mean, var = ref_mean_var(ref.sf, [max(loc, 0.0)])
    assert d.mean()[0] == pytest.approx(mean, rel=1e-9)
    assert d.variance()[0] == pytest.approx(var, rel=1e-8)
    assert d.point()[0] == max(loc, 0.0)
    samples = np.maximum(np.random.default_rng(1).normal(loc, scale, N_MC), 0.0)
    assert_mc(samples, d.mean()[0], d.variance()[0])
    # log_prob: the atom's log mass at 0, the normal log density above.
    lp = d.log_prob(np.array([0.0, 1.0, 4.0]))[0]
    assert lp[0] == pytest.approx(np.log(atom), rel=1e-12)
    np.testing.assert_allclose(lp[1:], ref.logpdf([1.0, 4.0]), rtol=1e-12)


def test_normal_extremes() -> None:
    loc = np.array([-1e6, -30.0, 5.0, 1e6, 40.0])
    scale = np.array([1.0, 1.0, 1e-12, 1e-3, 1e-300])
    d = Normal(loc=loc, scale=scale)
    mean, var, sd = d.mean(), d.variance(), d.stddev()
    for arr in (mean, var, sd, d.cdf(np.array([0.0, 1.0, 5.0, 1e7]))):
        assert np.isfinite(arr).all()
    # loc far below zero: everything sits on the atom.
    assert d.atom()[0] == 1.0 and mean[0] == 0.0 and var[0] == 0.0
    assert (d.icdf(np.array([0.5, 0.999]))[0] == 0.0).all()
    # loc/scale = -30: E[T] = P(X > 0) E[X | X > 0], from scipy's truncated normal.
    p_pos = st.norm.sf(30.0)
    tn = st.truncnorm(30.0, np.inf)
    assert mean[1] == pytest.approx(p_pos * tn.mean(), rel=1e-10)
    assert var[1] == pytest.approx(p_pos * tn.var() + p_pos * (1 - p_pos) * tn.mean() ** 2, 1e-8)
    # tiny scale: a near point mass at loc.
    assert mean[2] == pytest.approx(5.0, rel=1e-15) and var[2] == pytest.approx(1e-24, rel=1e-9)
    assert d.icdf(np.array([0.5]))[2, 0] == pytest.approx(5.0, rel=1e-15)
    assert mean[3] == pytest.approx(1e6, rel=1e-15) and var[3] == pytest.approx(1e-6, rel=1e-9)
    assert mean[4] == 40.0 and d.cdf(40.0 - 1e-6)[4] == 0.0 and d.cdf(40.0 + 1e-6)[4] == 1.0
    lp = d.log_prob(np.array([0.0, 1.0]))
    assert np.isfinite(lp[:4]).all()
    # scale 1e-300: log densities near -1e603 lie beyond the double range.
    assert (lp[4] == -np.inf).all()


# ----- exponential ------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.05, 0.4, 1.0, 7.0])
def test_exponential_vs_scipy(rate: float) -> None:
    d = Exponential(rate=np.array([rate]))
    ref = st.expon(scale=1.0 / rate)

    def cdf(t: float) -> float:
        return float(ref.cdf(t))

    check_against(d, cdf, 0.0, np.array([0.0, 0.01, 0.3, 1.0, 5.0, 50.0]), hi=10.0 / rate)
    mean, var = ref_mean_var(ref.sf, [1.0 / rate])
    assert d.mean()[0] == pytest.approx(mean, rel=1e-9)
    assert d.variance()[0] == pytest.approx(var, rel=1e-8)
    assert d.point()[0] == pytest.approx(mean, rel=1e-9)
    assert_mc(np.random.default_rng(2).exponential(1.0 / rate, N_MC), mean, var)
    np.testing.assert_allclose(d.log_prob(np.array([0.0, 2.0]))[0], ref.logpdf([0.0, 2.0]))


def test_exponential_extremes() -> None:
    d = Exponential(rate=np.array([1e-12, 1e12, 1e-200, 1e300]))
    assert np.isfinite(d.mean()).all() and np.isfinite(d.stddev()).all()
    np.testing.assert_allclose(d.mean(), [1e12, 1e-12, 1e200, 1e-300], rtol=1e-15)
    np.testing.assert_allclose(d.stddev(), d.mean(), rtol=1e-15)
    c = d.cdf(np.array([1.0, 1e-12]))
    # rate near 0: F(t) = rate * t to full precision; rate huge: F(1) = 1.
    assert c[0, 0] == pytest.approx(st.expon.cdf(1e-12), rel=1e-12)
    assert c[1, 0] == 1.0 and c[1, 1] == pytest.approx(-np.expm1(-1.0), rel=1e-12)
    q = d.icdf(np.array([0.5, 1e-9]))
    np.testing.assert_allclose(q[:, 0], np.log(2) / d.rate, rtol=1e-14)
    np.testing.assert_allclose(q[:, 1], -np.log1p(-1e-9) / d.rate, rtol=1e-12)
    assert np.isfinite(d.log_prob(np.array([0.0, 3.0]))).all()
    assert (d.icdf(1.0) == np.inf).all()


# ----- ZILN -------------------------------------------------------------------------------

ZILN_CASES = [(0.1, 1.5, 0.8), (0.0, 0.0, 1.0), (0.4, 3.0, 0.3), (0.05, -1.0, 1.6)]


@pytest.mark.parametrize(("p0", "mu", "sigma"), ZILN_CASES)
def test_ziln_vs_scipy(p0: float, mu: float, sigma: float) -> None:
    d = ZILN(p0=np.array([p0]), mu=np.array([mu]), sigma=np.array([sigma]))
    ref = st.lognorm(s=sigma, scale=np.exp(mu))

    def cdf(t: float) -> float:
        return p0 + (1 - p0) * float(ref.cdf(t)) if t >= 0 else 0.0

    ts = np.array([0.0, 1e-3, 0.2, 1.0, 4.0, 30.0, 300.0])
    check_against(d, cdf, p0, ts, hi=float(ref.ppf(0.9999)))
    breaks = [float(x) for x in ref.ppf([0.1, 0.5, 0.9, 0.999])]
    mean, var = ref_mean_var(lambda t: (1 - p0) * float(ref.sf(t)), breaks)
    assert d.mean()[0] == pytest.approx(mean, rel=1e-8)
    assert d.variance()[0] == pytest.approx(var, rel=1e-7)
    assert d.point()[0] == d.mean()[0]
    rng = np.random.default_rng(3)
    samples = np.where(rng.random(N_MC) < p0, 0.0, rng.lognormal(mu, sigma, N_MC))
    assert_mc(samples, mean, var)
    lp = d.log_prob(np.array([0.0, 2.0]))[0]
    assert lp[0] == (np.log(p0) if p0 > 0 else -np.inf)
    assert lp[1] == pytest.approx(np.log1p(-p0) + ref.logpdf(2.0), rel=1e-12)


def test_ziln_extremes() -> None:
    p0 = np.array([0.0, 1 - 1e-12, 0.3, 0.2, 0.0])
    mu = np.array([-1250.0, 2.0, 0.0, 1.0, 0.0])
    sigma = np.array([50.0, 1.0, 50.0, 1e-9, 1.0])
    d = ZILN(p0=p0, mu=mu, sigma=sigma)
    mean = d.mean()
    assert not np.isnan(mean).any() and not np.isnan(d.variance()).any()
    # sigma = 50 with a compensating mu: E[T] = exp(mu + sigma^2/2) = 1, not 0 * inf.
    assert mean[0] == pytest.approx(1.0, rel=1e-12)
    # p0 near 1: the mean scales with 1 - p0, the quantiles sit on the atom.
    assert mean[1] == pytest.approx(1e-12 * np.exp(2.5), rel=1e-4)
    assert d.icdf(np.array([0.999]))[1, 0] == 0.0
    # sigma = 50, mu = 0: a mean beyond the double range is inf, never NaN; CDF and
    # quantiles stay finite and match scipy.
    assert mean[2] == np.inf
    ref = st.lognorm(s=50.0)
    assert d.cdf(10.0)[2] == pytest.approx(0.3 + 0.7 * ref.cdf(10.0), rel=1e-12)
    assert d.icdf(np.array([0.65]))[2, 0] == pytest.approx(ref.ppf(0.5), rel=1e-9)
    assert np.isfinite(d.icdf(np.array([0.999]))[2]).all()
    # sigma tiny: a point mass at e, variance (1-p0) e^2 (sigma^2 + p0) to first order.
    assert mean[3] == pytest.approx(0.8 * np.e, rel=1e-12)
    assert d.variance()[3] == pytest.approx(0.8 * np.e**2 * 0.2, rel=1e-9)
    assert d.icdf(np.array([0.6]))[3, 0] == pytest.approx(np.e, rel=1e-8)
    assert np.isfinite(d.log_prob(np.array([1.0, 5.0]))).all()


# ----- histogram --------------------------------------------------------------------------


def histogram_reference(probs: Arr, edges: Arr) -> Cdf:
    """Mixture of scipy uniforms on the closed buckets and an expon tail on the open one."""
    p = probs / probs.sum()
    width = np.diff(edges)
    parts = [st.uniform(loc=edges[j], scale=width[j]) for j in range(len(p) - 1)]
    parts.append(st.expon(loc=edges[-2], scale=width[-1] / 2.0))

    def cdf(t: float) -> float:
        return float(sum(pj * part.cdf(t) for pj, part in zip(p, parts, strict=True)))

    return cdf


def test_histogram_hand_case() -> None:
    d = Histogram(probs=np.array([[2.0, 5.0, 3.0]]), edges=np.array([0.0, 1.0, 3.0, 7.0]))
    # Worked by hand: uniform on [0,1) and [1,3), tail from 3 with mean (7-3)/2 = 2.
    got = d.cdf(np.array([0.5, 2.0, 3.0, 5.0]))[0]
    np.testing.assert_allclose(got, [0.1, 0.45, 0.7, 0.7 + 0.3 * (1 - np.exp(-1.0))])
    assert d.mean()[0] == pytest.approx(0.2 * 0.5 + 0.5 * 2.0 + 0.3 * 5.0)
    # E[T^2] by hand: 0.2/3 + 0.5 * (27 - 1)/6 + 0.3 * (9 + 3*4 + 2*4).
    second = 0.2 / 3 + 0.5 * 26 / 6 + 0.3 * (9 + 12 + 8)
    assert d.variance()[0] == pytest.approx(second - 2.6**2)
    q = d.icdf(np.array([0.1, 0.45, 0.7, 1 - 0.3 * np.exp(-1.0)]))[0]
    np.testing.assert_allclose(q, [0.5, 2.0, 3.0, 5.0], rtol=1e-14)
    np.testing.assert_allclose(d.log_prob(np.array([0.5, 2.0]))[0], np.log([0.2, 0.25]))


HIST_CASES = [
    (np.array([0.1, 0.4, 0.3, 0.2]), np.array([0.0, 2.0, 5.0, 15.0, 60.0])),
    (np.array([0.0, 0.7, 0.0, 0.3]), np.array([0.0, 1.0, 1.5, 3.0, 4.0])),
    (np.array([3.0]), np.array([0.0, 10.0])),
    (np.array([0.5, 0.5, 0.0]), np.array([0.0, 1.0, 2.0, 9.0])),
]


def check_on_grid(d: Distribution, cdf: Cdf, ts: Arr, grid: Arr) -> tuple[float, float]:
    """A bucket family against its reference CDF: values, and mean and variance integrated
    over the reference's pieces (knots at ``grid``); the reference's mean and variance."""
    check_against(d, cdf, 0.0, ts, hi=float(grid[-1]))
    mean, var = ref_mean_var(lambda t: 1.0 - cdf(t), list(grid))
    assert d.mean()[0] == pytest.approx(mean, rel=1e-9)
    assert d.variance()[0] == pytest.approx(var, rel=1e-8)
    return mean, var


def assert_grids_agree(
    shared: Distribution, per_row: Distribution, rng: np.random.Generator
) -> None:
    """A family's shared grid and the same grid repeated per row give identical answers."""
    t = rng.uniform(0, 25, (shared.n, 4))
    levels = np.concatenate([[0.0, 1.0], rng.uniform(0, 1, 5)])
    np.testing.assert_array_equal(shared.cdf(t), per_row.cdf(t))
    np.testing.assert_array_equal(shared.icdf(levels), per_row.icdf(levels))
    np.testing.assert_array_equal(shared.mean(), per_row.mean())


@pytest.mark.parametrize(("probs", "edges"), HIST_CASES)
def test_histogram_vs_reference(probs: Arr, edges: Arr) -> None:
    d = Histogram(probs=probs[None, :], edges=edges)
    cdf = histogram_reference(probs, edges)
    ts = np.array([0.0, 0.3, 1.0, 1.2, 2.5, 4.0, 10.0, 100.0])
    mean, var = check_on_grid(d, cdf, ts, edges)
    mid = (edges[:-1] + edges[1:]) / 2
    assert d.point()[0] == pytest.approx(float(probs @ mid / probs.sum()), rel=1e-14)
    # Monte Carlo: pick a bucket, then a uniform inside or the exponential tail.
    rng = np.random.default_rng(4)
    p = probs / probs.sum()
    j = rng.choice(len(p), size=N_MC, p=p)
    width = np.diff(edges)
    inner = edges[j] + width[j] * rng.random(N_MC)
    tail = edges[-2] + rng.exponential(width[-1] / 2, N_MC)
    assert_mc(np.where(j == len(p) - 1, tail, inner), mean, var)


def test_histogram_zero_buckets_and_extremes() -> None:
    edges = np.array([0.0, 1.0, 2.0, 4.0, 8.0])
    d = Histogram(probs=np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]), edges=edges)
    # All mass in [1, 2): quantiles never enter the empty buckets, the top is 2.
    np.testing.assert_allclose(d.icdf(np.array([0.0, 0.5, 1.0]))[0], [0.0, 1.5, 2.0])
    assert d.cdf(np.array([0.99, 3.0]))[0].tolist() == [0.0, 1.0]
    assert d.log_prob(np.array([0.5]))[0, 0] == -np.inf
    # All mass in the open bucket: an exponential from 4 with mean 2.
    assert d.mean()[1] == pytest.approx(6.0) and d.variance()[1] == pytest.approx(4.0)
    assert d.icdf(np.array([0.5]))[1, 0] == pytest.approx(4.0 + 2.0 * np.log(2.0))
    assert d.icdf(np.array([1 - 1e-15]))[1, 0] == pytest.approx(4 - 2 * np.log(1e-15), 1e-3)
    # Huge raw scores are renormalised without overflow.
    big = Histogram(probs=np.array([[1e308, 1e308, 1e308, 1e308]]), edges=edges)
    np.testing.assert_allclose(big.params()["probs"], 0.25)
    assert np.isfinite(big.mean()).all()


def test_histogram_optional_point_is_served_as_given() -> None:
    """A per-row ``point`` changes the point only: the law, its mean and quantiles stay."""
    edges = np.array([0.0, 1.0, 3.0, 7.0])
    probs = np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    plain = Histogram(probs=probs, edges=edges)
    # hand case: row 0 mean 0.2 * 0.5 + 0.5 * 2 + 0.3 * 5 = 2.6 (open bucket: midpoint)
    np.testing.assert_allclose(plain.point(), [2.6, 0.5])
    d = get_family("histogram").from_params({"probs": probs, "edges": edges, "point": [4.25, 0]})
    assert d.point().tolist() == [4.25, 0.0]
    np.testing.assert_array_equal(d.mean(), plain.mean())
    np.testing.assert_array_equal(d.icdf(np.array([0.1, 0.9])), plain.icdf(np.array([0.1, 0.9])))
    assert d.params()["point"].tolist() == [4.25, 0.0] and "point" not in plain.params()
    assert d.take(np.array([1])).point().tolist() == [0.0]
    assert type(d).from_params(d.params()).point().tolist() == [4.25, 0.0]
    assert "point" in type(d).optional_params and "point" not in type(d).required_params
    for bad in ([-1.0, 0.0], [1.0], [np.nan, 1.0], [[1.0], [2.0]]):
        with pytest.raises(ParameterError):
            get_family("histogram").from_params({"probs": probs, "edges": edges, "point": bad})


def test_histogram_shared_and_per_row_edges_agree() -> None:
    rng = np.random.default_rng(5)
    n, b = 7, 5
    probs = rng.dirichlet(np.ones(b), n)
    probs[2, 1] = 0.0
    edges = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 5.0, b))])
    shared = Histogram(probs=probs, edges=edges)
    per_row = Histogram(probs=probs, edges=np.tile(edges, (n, 1)))
    t = np.array([0.0, 0.7, 3.0, edges[3], 40.0])
    levels = np.array([0.0, 0.2, 0.5, 0.95, 1.0])
    np.testing.assert_array_equal(shared.cdf(t), per_row.cdf(t))
    np.testing.assert_array_equal(shared.icdf(levels), per_row.icdf(levels))
    np.testing.assert_array_equal(shared.mean(), per_row.mean())
    intervals = np.array([[0.0, 1.0], [1.0, 6.0], [6.0, np.inf]])
    np.testing.assert_allclose(shared.interval_mass(intervals).sum(1), 1.0, rtol=1e-14)
    # Different per-row edges: each row equals its own one-row distribution.
    own = np.cumsum(np.concatenate([np.zeros((n, 1)), rng.uniform(0.5, 5, (n, b))], 1), 1)
    d = Histogram(probs=probs, edges=own)
    t_rows = rng.uniform(0, 30, (n, 3))
    q_rows = rng.uniform(0, 1, (n, 3))
    for i in range(n):
        one = Histogram(probs=probs[i : i + 1], edges=own[i])
        np.testing.assert_array_equal(d.cdf(t_rows)[i], one.cdf(t_rows[i])[0])
        np.testing.assert_array_equal(d.icdf(q_rows)[i], one.icdf(q_rows[i])[0])


# ----- survival ---------------------------------------------------------------------------


def survival_reference(thresholds: Arr, sf: Arr) -> Cdf:
    """1 - S(t), S written out from the documented rule with np.interp and an exp tail."""
    s = np.minimum.accumulate(sf)
    knots = np.concatenate([[0.0], thresholds])
    values = np.concatenate([[1.0], s])
    w = knots[-1] - knots[-2]

    def cdf(t: float) -> float:
        if t < 0:
            return 0.0
        if t <= knots[-1]:
            return 1.0 - float(np.interp(t, knots, values))
        return 1.0 - float(s[-1] * np.exp(-(t - knots[-1]) / w))

    return cdf


def test_survival_hand_case() -> None:
    d = Survival(thresholds=np.array([1.0, 2.0, 4.0]), sf=np.array([[0.8, 0.9, 0.2]]))
    # Running minimum: 0.9 at t=2 is lowered to 0.8.
    np.testing.assert_array_equal(d.params()["sf"], [[0.8, 0.8, 0.2]])
    s = 1.0 - d.cdf(np.array([0.5, 1.5, 3.0, 6.0]))[0]
    np.testing.assert_allclose(s, [0.9, 0.8, 0.5, 0.2 * np.exp(-1.0)], rtol=1e-14)
    # Integral of S: 0.9 + 0.8 + 2 * 0.5 + 0.2 * 2 (the tail's mean excess is w = 2).
    assert d.mean()[0] == pytest.approx(3.1, rel=1e-14)
    assert d.point()[0] == d.mean()[0]
    np.testing.assert_allclose(d.icdf(np.array([0.1, 0.5]))[0], [0.5, 3.0], rtol=1e-14)
    assert d.icdf(np.array([1 - 0.2 * np.exp(-1.0)]))[0, 0] == pytest.approx(6.0, rel=1e-12)
    assert d.atom()[0] == 0.0 and d.cdf(0.0)[0] == 0.0


SURV_CASES = [
    (np.array([1.0, 3.0, 10.0, 30.0]), np.array([0.9, 0.6, 0.3, 0.05])),
    (np.array([2.0, 5.0, 7.0]), np.array([0.7, 0.75, 0.1])),
    (np.array([4.0]), np.array([0.5])),
    (np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])),
    (np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 0.0])),
]


@pytest.mark.parametrize(("thresholds", "sf"), SURV_CASES)
def test_survival_vs_reference(thresholds: Arr, sf: Arr) -> None:
    d = Survival(thresholds=thresholds, sf=sf[None, :])
    cdf = survival_reference(thresholds, sf)
    ts = np.array([0.0, 0.5, 1.0, 2.5, 4.0, 8.0, 20.0, 100.0])
    mean, var = check_on_grid(d, cdf, ts, thresholds)
    # Monte Carlo by inverting the reference survival curve on uniforms, piece by piece.
    u = np.random.default_rng(6).random(N_MC)
    s = np.minimum.accumulate(sf)
    knots = np.concatenate([[0.0], thresholds])
    values = np.concatenate([[1.0], s])
    w = knots[-1] - knots[-2]
    inside = u > s[-1]
    # np.interp needs increasing x: S is non-increasing, so interpolate on reversed arrays.
    t_inside = np.interp(u, values[::-1], knots[::-1])
    with np.errstate(divide="ignore"):
        t_tail = knots[-1] + w * np.log(np.where(inside, 1.0, s[-1] / u))
    assert_mc(np.where(inside, t_inside, t_tail), mean, var)


def test_survival_shared_and_per_row_thresholds_agree() -> None:
    rng = np.random.default_rng(7)
    n, m = 6, 4
    sf = rng.uniform(0, 1, (n, m))
    thr = np.cumsum(rng.uniform(0.5, 4.0, m))
    shared = Survival(thresholds=thr, sf=sf)
    per_row = Survival(thresholds=np.tile(thr, (n, 1)), sf=sf)
    assert_grids_agree(shared, per_row, rng)
    t = rng.uniform(0, 25, (n, 4))
    assert shared.params()["thresholds"].shape == (m,)
    assert per_row.params()["thresholds"].shape == (n, m)
    for i in range(n):
        cdf = survival_reference(thr, sf[i])
        np.testing.assert_allclose(shared.cdf(t)[i], [cdf(x) for x in t[i]], atol=1e-14)


# ----- quantile ---------------------------------------------------------------------------


def quantile_reference(levels: Arr, values: Arr) -> tuple[Callable[[Arr], Arr], Cdf]:
    """Q(u) and F(t) written out from the documented rule, one row.

    Q: np.interp through (0, 0) and the knots, then ``v_K + beta * log((1 - tau_K)/(1 - u))``
    with beta from the slope to the last knot below v_K. F: the largest u with Q(u) <= t,
    by bisection on Q (no use of the family's CDF).
    """
    tau = np.concatenate([[0.0], levels])
    v = np.concatenate([[0.0], values])
    below = max(i for i in range(len(v)) if v[i] < v[-1])
    beta = (1 - tau[-1]) * (v[-1] - v[below]) / (tau[-1] - tau[below])

    def q_of(u: Arr) -> Arr:
        u = np.asarray(u, dtype=np.float64)
        with np.errstate(divide="ignore"):
            tail = v[-1] + beta * np.log((1 - tau[-1]) / (1 - np.minimum(u, 1.0)))
        return np.where(u <= tau[-1], np.interp(u, tau, v), tail)

    def cdf(t: float) -> float:
        if t < 0:
            return 0.0
        lo, hi = 0.0, 1.0
        if float(q_of(np.array(lo))) > t:
            return 0.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if float(q_of(np.array(mid))) <= t:
                lo = mid
            else:
                hi = mid
        return lo

    return q_of, cdf


def test_quantile_hand_case() -> None:
    d = Quantile(levels=np.array([0.1, 0.5, 0.9]), values=np.array([[1.0, 4.0, 10.0]]))
    # By hand: uniform mass 0.1 on [0, 1], 0.4 on [1, 4], 0.4 on [4, 10]; the last slope
    # dq/du = 6/0.4 = 15, so the tail's mean excess is 0.1 * 15 = 1.5 (density 0.4/6 both
    # sides of 10: continuous).
    np.testing.assert_allclose(
        d.cdf(np.array([0.5, 1.0, 2.5, 7.0, 10.0, 11.5]))[0],
        [0.05, 0.1, 0.3, 0.7, 0.9, 1 - 0.1 * np.exp(-1.0)],
        rtol=1e-14,
    )
    _, pdf = d.cdf_pdf(np.array([[10.0 - 1e-9, 10.0]]))
    assert pdf[0, 0] == pytest.approx(pdf[0, 1], rel=1e-12)
    assert pdf[0, 1] == pytest.approx(0.4 / 6.0, rel=1e-14)
    mean = 0.1 * 0.5 + 0.4 * 2.5 + 0.4 * 7.0 + 0.1 * (10 + 1.5)
    second = 0.1 / 3 + 0.4 * (1 + 4 + 16) / 3 + 0.4 * (16 + 40 + 100) / 3
    second += 0.1 * (100 + 2 * 10 * 1.5 + 2 * 1.5**2)
    assert d.mean()[0] == pytest.approx(mean, rel=1e-14)
    assert d.variance()[0] == pytest.approx(second - mean**2, rel=1e-12)
    assert d.point()[0] == d.mean()[0]
    np.testing.assert_allclose(
        d.icdf(np.array([0.0, 0.05, 0.3, 0.9, 1 - 0.1 * np.exp(-2.0)]))[0],
        [0.0, 0.5, 2.5, 10.0, 13.0],
        rtol=1e-13,
    )
    np.testing.assert_allclose(
        d.log_prob(np.array([0.0, 0.5, 2.0, 10.0, 13.0]))[0],
        np.log([0.1, 0.1, 0.4 / 3, 0.4 / 6, 0.1 / 1.5 * np.exp(-2.0)]),
        rtol=1e-13,
    )
    assert d.icdf(1.0)[0] == np.inf and d.atom()[0] == 0.0


def test_quantile_atoms_from_equal_values() -> None:
    # 0 at levels 0.1 and 0.3: an atom of 0.3 at 0; 5 at 0.6 and 0.8: an atom of 0.2 at 5.
    levels = np.array([0.1, 0.3, 0.6, 0.8])
    d = Quantile(levels=levels, values=np.array([[0.0, 0.0, 5.0, 5.0]]))
    assert d.atom()[0] == pytest.approx(0.3)
    np.testing.assert_allclose(
        d.cdf(np.array([0.0, 2.5, 5.0 - 1e-12, 5.0]))[0], [0.3, 0.45, 0.6, 0.8], atol=1e-12
    )
    # Quantiles: 0 up to the atom's level, flat at 5 through the second atom.
    np.testing.assert_allclose(
        d.icdf(np.array([0.0, 0.2, 0.3, 0.45, 0.6, 0.7, 0.8]))[0], [0, 0, 0, 2.5, 5, 5, 5]
    )
    # log_prob: log of the atom at 0, the segment's density inside, the tail's right of 5.
    # After the flat last segment the tail takes the slope from the last lower value, 0 at
    # level 0.3: beta = 0.2 * 5 / 0.5 = 2.
    np.testing.assert_allclose(
        d.log_prob(np.array([0.0, 1.0, 5.0]))[0], np.log([0.3, 0.3 / 5, 0.2 / 2]), rtol=1e-13
    )
    assert d.beta[0] == pytest.approx(2.0)
    # Interval masses follow the base rule: [0, a] holds the atom at 0, (5, inf) not 5's.
    masses = d.interval_mass(np.array([[0.0, 1.0], [1.0, 5.0], [5.0, np.inf]]))[0]
    np.testing.assert_allclose(masses, [0.36, 0.44, 0.2], atol=1e-12)


QUANTILE_CASES = [
    (np.array([0.05, 0.25, 0.5, 0.75, 0.95]), np.array([0.3, 2.0, 6.0, 15.0, 48.0])),
    (np.array([0.1, 0.5, 0.9]), np.array([0.0, 3.0, 3.0])),
    (np.array([0.5]), np.array([7.0])),
    (np.array([0.01, 0.02, 0.99]), np.array([0.0, 0.0, 1.0])),
    (np.array([0.2, 0.4, 0.6, 0.8]), np.array([1.0, 1.0, 4.0, 30.0])),
]


@pytest.mark.parametrize(("levels", "values"), QUANTILE_CASES)
def test_quantile_vs_reference(levels: Arr, values: Arr) -> None:
    d = Quantile(levels=levels, values=values[None, :])
    q_of, cdf = quantile_reference(levels, values)
    ts = np.array([0.0, 0.2, 1.0, 2.5, 3.0, 6.5, 20.0, 60.0, 200.0])
    np.testing.assert_allclose(d.cdf(ts)[0], [cdf(float(t)) for t in ts], rtol=0, atol=1e-13)
    np.testing.assert_allclose(d.icdf(LEVELS)[0], q_of(LEVELS), rtol=1e-13, atol=1e-13)
    atom = float(levels[values == 0].max()) if (values == 0).any() else 0.0
    assert d.atom()[0] == pytest.approx(atom, abs=1e-15)
    # Moments: integrals of Q and Q**2 over (0, 1) with scipy, split at the levels.
    knots = [0.0, *levels.tolist(), 1.0]
    m1 = sum(
        quad(lambda u: float(q_of(u)), a, b, epsabs=0, epsrel=1e-12, limit=200)[0]
        for a, b in pairwise(knots)
    )
    m2 = sum(
        quad(lambda u: float(q_of(u)) ** 2, a, b, epsabs=0, epsrel=1e-12, limit=200)[0]
        for a, b in pairwise(knots)
    )
    assert d.mean()[0] == pytest.approx(m1, rel=1e-9)
    assert d.variance()[0] == pytest.approx(m2 - m1 * m1, rel=1e-8)
    # The density: the reference CDF's slope between knots, by central differences.
    inner = np.array([t for t in (0.2, 2.5, 6.5, 20.0, 60.0) if min(abs(t - values)) > 1e-3])
    h = 1e-6
    slope = [(cdf(t + h) - cdf(t - h)) / (2 * h) for t in inner]
    np.testing.assert_allclose(np.exp(d.log_prob(inner)[0]), slope, rtol=1e-5, atol=1e-9)
    # Monte Carlo: the hand-written quantile function at uniforms (inverse transform).
    samples = q_of(np.random.default_rng(11).random(N_MC))
    assert_mc(samples, m1, m2 - m1 * m1)


def test_quantile_extremes() -> None:
    levels = np.array([0.1, 0.5, 0.9])
    # By hand at scale 1: last slope (4 - 2)/0.4 = 5, tail mean excess 0.1 * 5 = 0.5; mean
    # 0.1 * 0.5 + 0.4 * 1.5 + 0.4 * 3 + 0.1 * 4.5 = 2.3; the law scales with the values.
    unit = Quantile(levels=levels, values=np.array([[1.0, 2.0, 4.0]]))
    for scale in (1e-300, 1e-12, 1.0, 1e12, 1e300):
        d = Quantile(levels=levels, values=scale * np.array([[1.0, 2.0, 4.0]]))
        q_of, _ = quantile_reference(levels, scale * np.array([1.0, 2.0, 4.0]))
        np.testing.assert_allclose(d.icdf(LEVELS)[0], q_of(LEVELS), rtol=1e-12)
        np.testing.assert_allclose(
            d.cdf(scale * np.array([0.5, 1.5, 3.0, 5.0]))[0],
            [0.05, 0.3, 0.7, 1 - 0.1 * np.exp(-2.0)],
            rtol=1e-12,
        )
        assert d.mean()[0] == pytest.approx(scale * 2.3, rel=1e-12)
        assert np.isfinite(d.log_prob(scale * np.array([0.5, 3.0, 5.0]))).all()
        np.testing.assert_allclose(
            d.log_prob(scale * np.array([0.5, 3.0]))[0],
            np.log([0.1, 0.2]) - np.log(scale),
            rtol=1e-12,
        )
        if scale < 1e150:  # beyond, the variance overflows to inf, as the exponential's does
            assert d.variance()[0] == pytest.approx(scale**2 * unit.variance()[0], rel=1e-12)
    # Levels close to 0 and 1, one level, and values equal but for the last.
    close = Quantile(levels=np.array([1e-12, 1 - 1e-12]), values=np.array([[1.0, 2.0]]))
    assert close.icdf(np.array([1 - 1e-13]))[0, 0] > 2.0
    assert close.cdf(np.array([0.5]))[0, 0] == pytest.approx(5e-13, rel=1e-9)
    one = Quantile(levels=np.array([0.5]), values=np.array([[3.0], [1e-8]]))
    # One level: uniform on [0, v] with mass 0.5, then a tail with mean excess 0.5 * v/0.5.
    np.testing.assert_allclose(
        one.mean(), 0.5 * np.array([1.5, 5e-9]) + 0.5 * 2 * np.array([3.0, 1e-8])
    )
    flat = Quantile(levels=np.array([0.1, 0.2, 0.3]), values=np.array([[2.0, 2.0, 2.0]]))
    assert flat.cdf(np.array([2.0]))[0, 0] == pytest.approx(0.3)
    assert flat.beta[0] == pytest.approx(0.7 * 2.0 / 0.3)


def test_quantile_point_shared_and_per_row_levels() -> None:
    rng = np.random.default_rng(12)
    n = 6
    levels = np.array([0.05, 0.3, 0.5, 0.7, 0.95])
    values = np.cumsum(rng.uniform(0.0, 5.0, (n, 5)), axis=1) + 0.01
    shared = Quantile(levels=levels, values=values)
    per_row = Quantile(levels=np.tile(levels, (n, 1)), values=values)
    assert_grids_agree(shared, per_row, rng)
    # The optional point is served as given; absent, the point is the mean.
    with_point = Quantile(levels=levels, values=values, point=values[:, 2])
    np.testing.assert_array_equal(with_point.point(), values[:, 2])
    np.testing.assert_array_equal(with_point.point(), with_point.icdf(0.5))
    assert "point" in with_point.params() and "point" not in shared.params()
    np.testing.assert_array_equal(shared.point(), shared.mean())


# ----- batch shapes shared by every baseline ------------------------------------------------


def one_of_each(n: int) -> list[Distribution]:
    rng = np.random.default_rng(8)
    return [
        Normal(loc=rng.normal(5, 5, n), scale=rng.uniform(0.5, 4, n)),
        Exponential(rate=rng.uniform(0.05, 2, n)),
        ZILN(p0=rng.uniform(0, 0.3, n), mu=rng.normal(1, 1, n), sigma=rng.uniform(0.3, 1.5, n)),
        Histogram(probs=rng.dirichlet(np.ones(4), n), edges=np.array([0.0, 1, 3, 9, 20])),
        Survival(thresholds=np.array([1.0, 4, 12]), sf=rng.uniform(0, 1, (n, 3))),
        Quantile(
            levels=np.array([0.1, 0.5, 0.9]), values=np.cumsum(rng.uniform(0, 9, (n, 3)), 1) + 0.1
        ),
    ]


@pytest.mark.parametrize("index", range(6))
def test_shapes_scalar_shared_per_row(index: int) -> None:
    n = 5
    d = one_of_each(n)[index]
    t = np.array([0.0, 0.5, 2.0, 8.0])
    full = d.cdf(t)
    assert full.shape == (n, 4)
    assert d.cdf(2.0).shape == (n,)
    np.testing.assert_array_equal(d.cdf(2.0), full[:, 2])
    np.testing.assert_array_equal(d.cdf(np.tile(t, (n, 1))), full)
    np.testing.assert_array_equal(d.cdf(t[::-1][None, :].repeat(n, 0))[:, ::-1], full)
    levels = np.array([0.1, 0.5, 0.9])
    assert d.icdf(levels).shape == (n, 3) and d.icdf(0.5).shape == (n,)
    np.testing.assert_array_equal(d.icdf(np.tile(levels, (n, 1))), d.icdf(levels))
    assert d.log_prob(t).shape == (n, 4)
    thr = np.linspace(0.5, 3, n)
    np.testing.assert_array_equal(d.quick_skip_prob(thr), d.cdf(thr[:, None])[:, 0])
    for f in (d.mean, d.variance, d.stddev, d.point, d.atom):
        assert f().shape == (n,)
    # from_params rebuilds the same distribution from its own params.
    again = type(d).from_params(d.params())
    np.testing.assert_allclose(again.cdf(t), full, rtol=1e-15)


# ----- garbage parameters -------------------------------------------------------------------

GOOD: dict[str, dict[str, npt.ArrayLike]] = {
    "normal": {"loc": [1.0, 2.0], "scale": [1.0, 2.0]},
    "exponential": {"rate": [1.0, 2.0]},
    "ziln": {"p0": [0.1, 0.0], "mu": [0.0, 1.0], "sigma": [1.0, 0.5]},
    "histogram": {"probs": [[0.5, 0.5], [0.2, 0.8]], "edges": [0.0, 1.0, 2.0]},
    "survival": {"thresholds": [1.0, 2.0], "sf": [[0.5, 0.2], [0.9, 0.1]]},
    "quantile": {"levels": [0.2, 0.8], "values": [[1.0, 5.0], [0.0, 2.0]]},
}

BAD = [
    ("normal", {"loc": [np.nan, 1.0]}),
    ("normal", {"scale": [1.0, -1.0]}),
    ("normal", {"scale": [1.0, 0.0]}),
    ("normal", {"scale": [1.0]}),
    ("normal", {"loc": [[1.0, 2.0]]}),
    ("normal", {"scale": [1.0, np.inf]}),
    ("exponential", {"rate": [0.0, 1.0]}),
    ("exponential", {"rate": [-1.0, 1.0]}),
    ("exponential", {"rate": [np.nan, 1.0]}),
    ("exponential", {"rate": 1.0}),
    ("ziln", {"p0": [1.0, 0.0]}),
    ("ziln", {"p0": [-0.1, 0.0]}),
    ("ziln", {"sigma": [0.0, 1.0]}),
    ("ziln", {"mu": [0.0, np.nan]}),
    ("ziln", {"mu": [0.0, 1.0, 2.0]}),
    ("histogram", {"edges": [0.0, 2.0, 1.0]}),
    ("histogram", {"edges": [0.0, 1.0, 1.0]}),
    ("histogram", {"edges": [0.5, 1.0, 2.0]}),
    ("histogram", {"edges": [0.0, 1.0, np.inf]}),
    ("histogram", {"edges": [0.0, 1.0, 2.0, 3.0]}),
    ("histogram", {"edges": [[0.0, 1.0, 2.0]] * 3}),
    ("histogram", {"probs": [[0.5, -0.1], [0.2, 0.8]]}),
    ("histogram", {"probs": [[0.0, 0.0], [0.2, 0.8]]}),
    ("histogram", {"probs": [[0.5, np.nan], [0.2, 0.8]]}),
    ("histogram", {"probs": [0.5, 0.5]}),
    ("survival", {"thresholds": [2.0, 1.0]}),
    ("survival", {"thresholds": [0.0, 1.0]}),
    ("survival", {"thresholds": [1.0, 2.0, 3.0]}),
    ("survival", {"sf": [[1.5, 0.2], [0.9, 0.1]]}),
    ("survival", {"sf": [[0.5, -0.2], [0.9, 0.1]]}),
    ("survival", {"sf": [[0.5, np.nan], [0.9, 0.1]]}),
    ("survival", {"sf": [0.5, 0.2]}),
    ("quantile", {"levels": [0.8, 0.2]}),
    ("quantile", {"levels": [0.2, 0.2]}),
    ("quantile", {"levels": [0.0, 0.8]}),
    ("quantile", {"levels": [0.2, 1.0]}),
    ("quantile", {"levels": [-0.1, 0.8]}),
    ("quantile", {"levels": [0.2, 0.5, 0.8]}),
    ("quantile", {"levels": [[0.2, 0.8]] * 3}),
    ("quantile", {"levels": [0.2, np.nan]}),
    ("quantile", {"values": [[5.0, 1.0], [0.0, 2.0]]}),
    ("quantile", {"values": [[1.0, 5.0], [-1.0, 2.0]]}),
    ("quantile", {"values": [[1.0, 5.0], [0.0, 0.0]]}),
    ("quantile", {"values": [[1.0, np.nan], [0.0, 2.0]]}),
    ("quantile", {"values": [[1.0, np.inf], [0.0, 2.0]]}),
    ("quantile", {"values": [1.0, 5.0]}),
    ("quantile", {"values": [[1.0], [2.0]]}),
    ("quantile", {"point": [1.0]}),
    ("quantile", {"point": [1.0, -1.0]}),
    ("quantile", {"point": [1.0, np.nan]}),
]


@pytest.mark.parametrize("family", sorted(GOOD))
def test_good_parameters_build(family: str) -> None:
    d = get_family(family).from_params(GOOD[family])
    assert d.n == 2 and np.isfinite(d.mean()).all()


@pytest.mark.parametrize(("family", "change"), BAD)
def test_garbage_parameters_raise(family: str, change: dict[str, npt.ArrayLike]) -> None:
    with pytest.raises(ParameterError):
        get_family(family).from_params({**GOOD[family], **change})


@pytest.mark.parametrize("family", sorted(GOOD))
def test_missing_or_unknown_parameter_raises(family: str) -> None:
    params = dict(GOOD[family])
    first = next(iter(params))
    with pytest.raises(ParameterError):
        get_family(family).from_params({k: v for k, v in params.items() if k != first})
    with pytest.raises(ParameterError):
        get_family(family).from_params({**params, "bogus": [1.0, 2.0]})
