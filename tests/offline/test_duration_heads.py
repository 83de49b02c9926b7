"""The duration-aware heads (d2co, ...): their fits and corrections against references
derived by hand or by simulation, and the duration they read inside the graph."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy import stats

from model_export.data.features import fit_features
from model_export.data.kuairand import load_joined, split_by_day
from model_export.data.prepared import encode
from model_export.models.cwm import CWM
from model_export.models.d2co import D2Co, gmm2, weighted_moving_average
from model_export.models.duration import DurationInput, duration_cuts, group_of_ms
from model_export.models.lda import (
    RATIO_EDGES,
    LabelDistributionAnchors,
    fit_anchors,
    ratio_bin,
    sinkhorn,
)
from model_export.training.baselines import build_model
from model_export.training.config import BaselineConfig
from service.distributions import Survival, get_family

SCALE = 10.0
NO_DURATION = DurationInput(column=0, missing_column=1, mean=0.0, std=1.0)


@pytest.fixture(scope="module")
def split() -> Iterator[object]:
    yield split_by_day(load_joined())


def _raw(head: np.ndarray, duration_ms: np.ndarray) -> torch.Tensor:
    """A raw output as a duration head builds it: head columns, log1p(duration), missing."""
    known = np.isfinite(duration_ms) & (duration_ms > 0)
    log_d = np.where(known, np.log1p(np.where(known, duration_ms, 0.0)), 10.0)
    cols = np.column_stack([head, log_d, (~known).astype(float)])
    return torch.from_numpy(cols)


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


# ----- duration groups ------------------------------------------------------------------------


def test_duration_groups_split_known_rows_evenly() -> None:
    rng = np.random.default_rng(0)
    d = np.round(rng.lognormal(11, 1, 40_000))
    d[:500] = 0.0
    cuts = duration_cuts(d, 10)
    g = group_of_ms(d, cuts)
    assert np.all(g[:500] == 0)
    counts = np.bincount(g[500:], minlength=11)[1:]
    assert counts.min() > 0.9 * 3_950 and counts.max() < 1.1 * 3_950
    # Each cut lies strictly between two observed durations: no row sits on one.
    log_d = np.log1p(d[500:])
    assert not np.isin(cuts, log_d).any()


def test_graph_groups_equal_numpy_groups_on_real_rows(split: object) -> None:
    """The float32 graph decodes every real row's duration into the same group."""
    train = split.train  # type: ignore[attr-defined]
    fitted = fit_features(train.iloc[:30_000])
    model = build_model(BaselineConfig(model="d2co", hidden=(8,)), fitted, np.zeros(1))
    assert isinstance(model, D2Co)
    d = train["duration_ms"].to_numpy(dtype=np.float64)
    model.fit_training_days(d, train["watch_time_s"].to_numpy())
    rows = split.test  # type: ignore[attr-defined]
    enc = encode(fitted, rows)
    with torch.no_grad():
        got = model.group(model.eval()(enc.categorical, enc.numeric)).numpy()
    want = group_of_ms(rows["duration_ms"].to_numpy(dtype=np.float64), model.log_cuts.numpy())  # type: ignore[operator]
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) == 21


# ----- d2co -------------------------------------------------------------------------------------


def test_gmm2_recovers_a_known_mixture() -> None:
    rng = np.random.default_rng(1)
    n = 60_000
    pick = rng.random(n) < 0.3
    x = np.where(pick, rng.normal(2.0, 1.0, n), rng.normal(40.0, 8.0, n))
    w, mu, sd = gmm2(x)
    np.testing.assert_allclose(w, [0.3, 0.7], atol=0.01)
    np.testing.assert_allclose(mu, [2.0, 40.0], rtol=0.02)
    np.testing.assert_allclose(sd, [1.0, 8.0], rtol=0.03)


def test_weighted_moving_average_by_hand() -> None:
    v = np.array([1.0, 2.0, 10.0, 4.0])
    n = np.array([1.0, 3.0, 0.0, 2.0])
    got = weighted_moving_average(v, n, window=1)
    want = [(1 * 1 + 3 * 2) / 4, (1 * 1 + 3 * 2 + 0) / 4, (3 * 2 + 0 + 2 * 4) / 5, (0 + 2 * 4) / 2]
    np.testing.assert_allclose(got, want)


def _d2co(noise: list[float], bias: list[float], cuts: list[float]) -> D2Co:
    torch.manual_seed(0)
    model = D2Co([4], 2, duration=NO_DURATION, n_groups=len(cuts) + 1, hidden=(8,))
    model.noise_s.copy_(torch.tensor(noise))  # type: ignore[operator]
    model.bias_s.copy_(torch.tensor(bias))  # type: ignore[operator]
    model.log_cuts.copy_(torch.tensor(cuts))  # type: ignore[operator]
    return model.double().eval()


def test_d2co_correction_and_its_inverse_by_hand() -> None:
    # groups: 0 unknown, 1 below e^10 ms (~22 s), 2 above
    model = _d2co([1.0, 2.0, 3.0], [11.0, 20.0, 0.5], [10.0])
    alpha = D2Co.sensitivity
    d = np.array([0.0, 5_000.0, 5_000.0, 60_000.0, 60_000.0])
    w = np.array([1.0, 2.0, 20.0, 0.0, 7.0])
    g = torch.from_numpy(group_of_ms(d, np.array([10.0])))
    assert g.tolist() == [0, 1, 1, 2, 2]
    # centre and half-width: group 0 (6, 5), group 1 (11, 9), group 2 (1.75, floor 0.5)
    centre, half = np.array([6.0, 11.0, 11.0, 1.75, 1.75]), np.array([5.0, 9.0, 9.0, 0.5, 0.5])
    r = model.corrected(torch.from_numpy(w), g).numpy()
    np.testing.assert_allclose(r, _sigmoid(alpha * (w - centre) / half), rtol=1e-12)
    # at the noise mean sigmoid(-alpha), at the bias mean sigmoid(alpha)
    assert r[1] == pytest.approx(_sigmoid(-alpha)) and r[2] == pytest.approx(_sigmoid(alpha))
    # predicting exactly the corrected label restores the watch time
    logit = np.log(r / (1 - r))
    loc, scale = model.served(_raw(logit[:, None], d))
    np.testing.assert_allclose(loc.numpy(), w, atol=1e-9)
    np.testing.assert_allclose(scale.numpy(), half * float(model.scale_factor))  # type: ignore[arg-type]
    got = float(model.loss(_raw(logit[:, None] * 0.3, d), torch.from_numpy(r)))
    p = _sigmoid(logit * 0.3)
    assert got == pytest.approx(float(np.mean(-(r * np.log(p) + (1 - r) * np.log(1 - p)))))


def test_d2co_fit_on_training_days_finds_noise_and_bias() -> None:
    rng = np.random.default_rng(2)
    d = np.round(rng.uniform(5_000, 100_000, 80_000))
    noisy = rng.random(d.size) < 0.25
    y = np.where(noisy, rng.gamma(4.0, 0.5, d.size), 0.6 * d / 1000 * rng.uniform(0.8, 1.2, d.size))
    model = D2Co([4], 2, duration=NO_DURATION, n_groups=8, hidden=(8,))
    model.fit_training_days(d, y)
    g = group_of_ms(d, model.log_cuts.numpy())  # type: ignore[operator]
    noise, bias = model.noise_s.numpy(), model.bias_s.numpy()  # type: ignore[operator]
    for k in range(1, 9):
        assert noise[k] == pytest.approx(2.0, rel=0.25)  # the gamma's mean
        # the biased component's mean within the group, smoothed over the neighbours
        assert bias[k] == pytest.approx(
            0.6 * np.mean(d[(g >= k - 1) & (g <= k + 1) & (g > 0)]) / 1000, rel=0.15
        )
    assert np.all(np.diff(bias[1:]) > 0)


def test_d2co_spread_factor_recovers_the_simulated_one() -> None:
    model = _d2co([1.0, 1.0, 1.0], [11.0, 21.0, 61.0], [10.0])
    rng = np.random.default_rng(3)
    d = rng.choice([0.0, 5_000.0, 60_000.0], 30_000)
    raw = _raw(rng.normal(0, 1.5, (d.size, 1)), d)
    loc, half = (t.numpy() for t in model.loc_half(raw))
    y = np.maximum(loc + 1.7 * half * rng.normal(size=d.size), 0.0)
    model.fit_validation_day(raw, y)
    assert float(model.scale_factor) == pytest.approx(1.7, rel=0.03)  # type: ignore[arg-type]


# ----- cwm --------------------------------------------------------------------------------------


def _cwm(tau_s: float = 20.0) -> CWM:
    torch.manual_seed(0)
    model = CWM([4], 2, duration=NO_DURATION, hidden=(8,), label_scale=SCALE).double().eval()
    with torch.no_grad():
        model.log_tau.fill_(math.log(tau_s / SCALE))
    return model.requires_grad_(False)


def _cwm_raw(mu: np.ndarray, s: np.ndarray) -> torch.Tensor:
    """Raw outputs giving relevance logit ``mu`` and spread ``s`` (softplus inverted)."""
    pre = np.log(np.expm1(s - CWM.min_spread))
    return _raw(np.column_stack([mu, pre]), np.zeros(mu.size))


def test_cwm_exit_is_where_the_benefit_peaks() -> None:
    """Without noise the exit time maximises integral (r - c(t)) dt, found on a grid."""
    tau = 20.0
    t = np.linspace(0.0, 300.0, 300_001)
    for r in (0.05, 0.4, 0.9):
        benefit = np.cumsum(r - (1 - np.exp(-t / tau))) * (t[1] - t[0])
        assert t[int(np.argmax(benefit))] == pytest.approx(-tau * math.log(1 - r), abs=1e-2)
        # ... which is the median of the exit time: S = 1/2 there for any spread
        model = _cwm(tau)
        raw = _cwm_raw(np.array([math.log(r / (1 - r))]), np.array([0.7]))
        t_exit = torch.tensor([-tau * math.log(1 - r) / SCALE], dtype=torch.float64)
        assert math.exp(float(model.log_sf(raw, t_exit)[0])) == pytest.approx(0.5, abs=1e-12)


def test_cwm_survival_and_density_match_a_simulation_and_scipy() -> None:
    tau, mu, s = 20.0, 0.3, 0.8
    model = _cwm(tau)
    raw = _cwm_raw(np.array([mu]), np.array([s]))
    rng = np.random.default_rng(4)
    z = mu + s * rng.logistic(size=400_000)
    cwt = -tau * np.log1p(-1 / (1 + np.exp(-z)))  # -tau log(1 - r), r = sigmoid(z)
    t = np.array([0.5, 3.0, 10.0, 30.0, 90.0])
    got = np.exp(model.log_sf(raw.expand(5, -1), torch.from_numpy(t / SCALE)).numpy())
    np.testing.assert_allclose(got, (cwt[:, None] > t).mean(axis=0), atol=3e-3)
    # density in scaled time: g(T) ~ Logistic(mu, s), g(t) = log(expm1(t / tau))
    ts = t / SCALE
    taus = tau / SCALE
    g = np.log(np.expm1(ts / taus))
    dg = 1 / (taus * (1 - np.exp(-ts / taus)))
    want = stats.logistic.logpdf(g, loc=mu, scale=s) + np.log(dg)
    dens = model.log_density(raw.expand(5, -1), torch.from_numpy(ts)).numpy()
    np.testing.assert_allclose(dens, want, rtol=1e-10)


def test_cwm_loss_is_the_counterfactual_likelihood() -> None:
    tau = 15.0
    model = _cwm(tau)
    rng = np.random.default_rng(5)
    n = 40
    mu, s = rng.normal(0, 1.5, n), rng.uniform(0.3, 2.0, n)
    d = rng.choice([0.0, 8_000.0, 40_000.0], n)
    w = rng.exponential(12.0, n)
    w[:6] = 0.0
    w[6:10] = d[6:10] / 1000 * 1.5  # replays of known videos
    y = model.targets(d, w)
    done = (d > 0) & (w * 1000 >= d)
    np.testing.assert_array_equal(y[:, 1].numpy() > 0.5, done)
    ts, taus = w / SCALE, tau / SCALE

    def logistic_sf(t: np.ndarray) -> np.ndarray:
        return stats.logistic.logsf(np.log(np.expm1(t / taus)), loc=mu, scale=s)

    safe = np.where(w > 0, ts, 1.0)
    dens = stats.logistic.logpdf(np.log(np.expm1(safe / taus)), loc=mu, scale=s) - np.log(
        taus * (1 - np.exp(-safe / taus))
    )
    quick = stats.logistic.logcdf(np.log(np.expm1(0.05 / taus)), loc=mu, scale=s)
    ll = np.where(w <= 0, quick, np.where(done, logistic_sf(safe), dens))
    got = float(model.loss(_cwm_raw(mu, s), y.double()))
    assert got == pytest.approx(-ll.mean(), rel=1e-6)


def test_cwm_served_curve_is_the_family_and_restore_its_mean() -> None:
    model = _cwm()
    rng = np.random.default_rng(6)
    raw = _cwm_raw(rng.normal(0, 2, 50), rng.uniform(0.1, 3, 50))
    thr, sf = model.served(raw)
    dist = Survival(thresholds=thr.numpy(), sf=sf.numpy())
    assert np.all(dist.mass > 0)
    np.testing.assert_allclose(model.restore(raw).numpy(), dist.mean(), rtol=1e-12)
    t = thr.numpy()[0]
    rows = raw.repeat_interleave(t.size, 0)
    exact = np.exp(model.log_sf(rows, torch.from_numpy(np.tile(t / SCALE, 50))).numpy())
    ref = 1 - np.arange(1, t.size + 1) / (t.size + 1)
    want = (1 - CWM.floor) * exact.reshape(50, -1) + CWM.floor * ref
    np.testing.assert_allclose(sf.numpy(), want, rtol=1e-12)


# ----- lda --------------------------------------------------------------------------------------


def test_lda_anchors_are_smoothed_cluster_histograms() -> None:
    edges = (0.0, 1.0, 2.0, 3.0, 4.0)
    ratio = np.array([0.5, 0.5, 1.5, 3.5, 2.5, 3.2])  # bins 0 0 1 3 2 3
    a = fit_anchors(ratio, 2, edges, floor=0.0)
    # sorted: 0.5 0.5 1.5 | 2.5 3.2 3.5 -> counts [2, 1, 0, 0] and [0, 0, 1, 2]
    # smoothed with (1/4, 1/2, 1/4), edge bins repeated: [7/4, 1, 1/4, 0], [0, 1/4, 1, 7/4]
    np.testing.assert_allclose(a[0], np.array([7, 4, 1, 0]) / 12)
    np.testing.assert_allclose(a[1], np.array([0, 1, 4, 7]) / 12)
    floored = fit_anchors(ratio, 2, edges, floor=0.1)
    np.testing.assert_allclose(floored, 0.9 * a + 0.1 / 4)
    assert ratio_bin(np.array([0.0, 0.999, 1.0, 9.0]), edges).tolist() == [0, 0, 1, 3]


def test_sinkhorn_plan_is_the_entropic_transport_plan() -> None:
    rng = np.random.default_rng(7)
    n, k, eps = 30, 4, 0.5
    scores = torch.from_numpy(rng.normal(0, 2, (n, k)))
    plan = sinkhorn(scores, eps, 500).numpy()
    np.testing.assert_allclose(plan.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(plan.sum(axis=0), n / k, atol=1e-6)
    # diag(u) exp(S / eps) diag(v): log Q - S / eps is a row term plus a column term
    resid = np.log(plan) - scores.numpy() / eps
    centred = resid - resid.mean(1, keepdims=True) - resid.mean(0, keepdims=True) + resid.mean()
    np.testing.assert_allclose(centred, 0.0, atol=1e-9)


def _lda() -> LabelDistributionAnchors:
    torch.manual_seed(0)
    duration = DurationInput(column=0, missing_column=1, mean=10.0, std=1.0)
    model = LabelDistributionAnchors([4], 2, duration=duration, hidden=(8,), label_scale=SCALE)
    rng = np.random.default_rng(8)
    table = rng.dirichlet(np.ones(len(RATIO_EDGES) - 1), (model.n_groups + 1, model.n_anchors))
    model.anchors.copy_(torch.from_numpy(table))  # type: ignore[operator]
    model.log_cuts.copy_(torch.linspace(9.0, 12.0, model.n_groups - 1))  # type: ignore[operator]
    return model.double().eval()


def test_lda_loss_by_hand() -> None:
    model = _lda()
    rng = np.random.default_rng(9)
    n, k = 12, model.n_anchors
    d = rng.choice([0.0, 9_000.0, 70_000.0, 400_000.0], n)
    w = rng.exponential(20.0, n)
    y = model.targets(d, w).double()
    logits, point = rng.normal(0, 1, (n, k)), rng.normal(1, 1, n)
    raw = _raw(np.column_stack([logits, point]), d)
    a = model.anchors.numpy()  # type: ignore[operator]
    g = group_of_ms(d, model.log_cuts.numpy())  # type: ignore[operator]
    dd = np.where(d > 0, d, np.expm1(10.0)) / 1000
    b = ratio_bin(w / dd)
    assert y[:, 1].long().tolist() == g.tolist() and y[:, 2].long().tolist() == b.tolist()
    log_pi = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    log_a = np.log(a[g, :, b])
    nll = -np.log(np.exp(log_pi + log_a).sum(1))
    q = np.exp((log_a + log_pi) / model.sinkhorn_epsilon)
    for _ in range(model.sinkhorn_iterations):
        q = q / q.sum(0, keepdims=True) / k
        q = q / q.sum(1, keepdims=True) / n
    align = -(q * n * log_pi).sum(1)
    want = np.mean(nll + align + (point - y[:, 0].numpy()) ** 2)  # targets are float32
    assert float(model.loss(raw, y)) == pytest.approx(want, rel=1e-10)


def test_lda_served_histogram_is_the_anchor_mixture_in_seconds() -> None:
    model = _lda()
    rng = np.random.default_rng(10)
    n, k = 6, model.n_anchors
    d = np.array([3_000.0, 9_000.0, 45_000.0, 120_000.0, 900_000.0, 0.0])
    logits, point = rng.normal(0, 1, (n, k)), np.array([-1.0, 0.2, 1.0, 3.0, 5.0, 2.0])
    raw = _raw(np.column_stack([logits, point]), d)
    probs, edges, pt = (t.numpy() for t in model.served(raw))
    pi = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    g = group_of_ms(d, model.log_cuts.numpy())  # type: ignore[operator]
    ratio_p = np.einsum("nk,nkj->nj", pi, model.anchors.numpy()[g])  # type: ignore[operator]
    rho = model.ratio_edges.numpy()  # type: ignore[operator]
    e = edges[0]
    want = np.zeros((n, e.size - 1))
    for i in range(n):
        secs = (d[i] if d[i] > 0 else np.expm1(10.0)) / 1000
        for j in range(rho.size - 1):
            law = stats.uniform(loc=rho[j] * secs, scale=(rho[j + 1] - rho[j]) * secs)
            cdf = law.cdf(np.append(e[:-1], np.inf))
            want[i] += ratio_p[i, j] * np.diff(cdf)
    want = (1 - model.floor) * want + model.floor / (e.size - 1)
    np.testing.assert_allclose(probs, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pt, np.maximum(point, 0) * SCALE)
    dist = get_family("histogram").from_params({"probs": probs, "edges": edges, "point": pt})
    np.testing.assert_allclose(dist.point(), model.restore(raw).numpy())
    assert np.all(dist.mass > 0)
