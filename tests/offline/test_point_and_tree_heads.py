"""The point regressors (huber, huberpp, am), distill_softmax and TPM: losses against hand
computations, the spread fits against known spreads, TPM's leaves against path products
worked out by hand."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from model_export.models.baseline import BaselineModel
from model_export.models.distill import DistilledBucketSoftmax, soft_labels
from model_export.models.point import (
    AsymmetricLogRegression,
    HuberRegression,
    PointRegression,
    RelativeHuberRegression,
)
from model_export.models.softmax import exponential_bucket_edges
from model_export.models.tpm import TreeProgressive, path_matrices, tpm_edges
from model_export.training.baselines import build_model
from model_export.training.config import BaselineConfig
from service.distributions import ZILN, Histogram, Normal
from tests.offline.test_baselines import SCALE, _labels, _tiny


def _hand_huber(r: float, delta: float) -> float:
    return 0.5 * r * r if abs(r) <= delta else delta * (abs(r) - 0.5 * delta)


# ----- the three point losses -------------------------------------------------------------------


def test_huber_loss_by_hand() -> None:
    model = _tiny(HuberRegression)
    # residuals inside and outside delta = 1: 0.5 -> 0.125, -3 -> 2.5, 0 -> 0
    raw = torch.tensor([[1.5], [0.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
    assert float(model.loss(raw, y)) == pytest.approx((0.125 + 2.5 + 0.0) / 3, rel=1e-12)
    z = np.random.default_rng(1).normal(1, 3, 50)
    ys = _labels(50, 1) / SCALE
    want = np.mean([_hand_huber(a - b, 1.0) for a, b in zip(z, ys, strict=True)])
    got = float(model.loss(torch.from_numpy(z[:, None]), torch.from_numpy(ys)))
    assert got == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(
        model.restore(torch.from_numpy(z[:, None])).numpy(),
        np.maximum(z * SCALE, PointRegression.point_floor_s),
    )


def test_relative_huber_loss_by_hand() -> None:
    model = _tiny(RelativeHuberRegression)
    # y = 0.9 (9 s), z = 1.4: relative error 0.5 / (0.9 + 0.1) = 0.5 -> 0.125;
    # y = 0, z = 0.3: 0.3 / 0.1 = 3 -> 3 - 0.5 = 2.5
    raw = torch.tensor([[1.4], [0.3]], dtype=torch.float64)
    y = torch.tensor([0.9, 0.0], dtype=torch.float64)
    assert float(model.loss(raw, y)) == pytest.approx((0.125 + 2.5) / 2, rel=1e-12)
    # On a constant prediction the relative loss sits below the plain Huber's minimiser: it
    # weighs short labels more.
    ys = torch.from_numpy(_labels(4000, 2) / SCALE)

    def best(m: BaselineModel) -> float:
        c = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([c], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = m.loss(c.expand(len(ys)).unsqueeze(1), ys)
            loss.backward()
            return loss

        opt.step(closure)
        return float(c.detach())

    assert best(model) < best(_tiny(HuberRegression))


def test_asymmetric_log_loss_by_hand_and_its_minimiser() -> None:
    model = _tiny(AsymmetricLogRegression)
    # label 9 s: log(10); z = log(10) + 1 is an over-estimate (weight 0.3), z = log(10) - 2
    # an under-estimate (weight 0.7)
    raw = torch.tensor([[math.log(10) + 1], [math.log(10) - 2]], dtype=torch.float64)
    y = torch.tensor([0.9, 0.9], dtype=torch.float64)
    assert float(model.loss(raw, y)) == pytest.approx((0.3 * 1 + 0.7 * 4) / 2, rel=1e-12)
    assert float(model.restore(raw)[0]) == pytest.approx(10 * math.e - 1, rel=1e-12)
    # A constant minimising it is the 0.7-expectile of log(1 + y): tau * E[(u - c)_+] =
    # (1 - tau) * E[(c - u)_+], solved here with brentq.
    ys = _labels(3000, 3)
    u = np.log1p(ys)
    want = optimize.brentq(
        lambda c: 0.7 * np.mean(np.maximum(u - c, 0)) - 0.3 * np.mean(np.maximum(c - u, 0)),
        u.min(),
        u.max(),
    )
    c = torch.full((3000, 1), float(want), dtype=torch.float64, requires_grad=True)
    model.loss(c, torch.from_numpy(ys / SCALE)).backward()
    assert c.grad is not None and abs(float(c.grad.sum())) < 1e-10


# ----- the validation-day spread ------------------------------------------------------------------


def test_spread_fit_recovers_a_lognormal_and_keeps_the_point() -> None:
    rng = np.random.default_rng(4)
    n, p0, sigma = 30_000, 0.12, 0.9
    point = rng.uniform(3, 60, n)
    mu = np.log(point) - math.log1p(-p0) - 0.5 * sigma**2
    y = np.where(rng.random(n) < p0, 0.0, np.exp(mu + sigma * rng.normal(size=n)))
    model = _tiny(HuberRegression)
    assert isinstance(model, PointRegression)
    model.fit_spread(point, y)
    assert model.family == "ziln"
    assert float(model.p0) == pytest.approx(p0, abs=0.01)
    assert float(model.sigma) == pytest.approx(sigma, rel=0.03)
    nll_normal, nll_ziln = (float(v) for v in model.validation_nll)
    assert nll_ziln < nll_normal
    # the served ZILN's mean (its point) is the regression's point, and its law the one fitted
    raw = torch.from_numpy(point[:50, None] / SCALE)
    p0_t, mu_t, sigma_t = (v.numpy() for v in model.served(raw))
    dist = ZILN(p0=p0_t, mu=mu_t, sigma=sigma_t)
    np.testing.assert_allclose(dist.point(), point[:50], rtol=1e-9)
    ref = stats.lognorm(s=sigma_t[0], scale=np.exp(mu_t[0]))
    assert float(dist.cdf(np.array([5.0]))[0, 0]) == pytest.approx(
        p0_t[0] + (1 - p0_t[0]) * ref.cdf(5.0), rel=1e-9
    )
    assert model.output_names() == ["p0", "mu", "sigma"]


def test_spread_fit_picks_the_normal_when_it_fits_better() -> None:
    rng = np.random.default_rng(5)
    point = rng.uniform(20, 60, 20_000)
    y = np.maximum(point + rng.normal(0, 5.0, point.size), 0.0)
    model = _tiny(HuberRegression)
    assert isinstance(model, PointRegression)
    model.fit_spread(point, y)
    assert model.family == "normal" and model.output_names() == ["loc", "scale"]
    assert float(model.scale_s) == pytest.approx(5.0, rel=0.03)
    loc, scale = model.served(torch.from_numpy(point[:10, None] / SCALE))
    np.testing.assert_allclose(Normal(loc=loc.numpy(), scale=scale.numpy()).point(), point[:10])


# ----- distill_softmax ---------------------------------------------------------------------------


def test_soft_labels_keep_the_label_mean() -> None:
    edges = exponential_bucket_edges()
    mids = 0.5 * (np.array(edges[1:]) + np.array(edges[:-1]))
    y = np.array([0.4, 1.0, 3.3, 12.0, 47.5, 200.0, 500.0])
    q = soft_labels(torch.from_numpy(y), torch.tensor(edges, dtype=torch.float64)).numpy()
    assert np.all(q >= 0)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(q @ mids, y, rtol=1e-9)
    # Independent reference for one label: the tilted Gaussian kernel solved with brentq.
    v, c, h = 12.0, 0.5, 0.5
    k = -((np.log(mids + c) - np.log(v + c)) ** 2) / (2 * h * h)

    def tilted(lam: float) -> np.ndarray:
        a = k + lam * mids / (v + c)
        w = np.exp(a - a.max())
        return w / w.sum()  # type: ignore[no-any-return]

    lam = optimize.brentq(lambda t: tilted(t) @ mids - v, -60, 60, xtol=1e-14)
    np.testing.assert_allclose(q[3], tilted(lam), atol=1e-9)
    # most weight near the label: the two buckets around 12 s hold most of it
    j = int(np.searchsorted(edges[1:-1], v, side="right"))
    assert q[3, j - 1 : j + 2].sum() > 0.6
    # labels past the ends of the grid go to the end buckets
    ends = soft_labels(
        torch.tensor([0.0, 5000.0], dtype=torch.float64), torch.tensor(edges, dtype=torch.float64)
    )
    assert float(ends[0, 0]) > 0.999 and float(ends[1, -1]) > 0.99


def test_distill_loss_is_the_soft_cross_entropy() -> None:
    edges = exponential_bucket_edges(8, 0.5, 200.0)
    model = _tiny(DistilledBucketSoftmax, edges_s=edges)
    rng = np.random.default_rng(6)
    raw = rng.normal(0, 1, (30, 8))
    y = _labels(30, 6)
    q = soft_labels(torch.from_numpy(y), model.edges_s).numpy()  # type: ignore[arg-type]
    logp = raw - np.log(np.exp(raw).sum(1, keepdims=True))
    want = -np.mean((q * logp).sum(1))
    got = float(model.loss(torch.from_numpy(raw), torch.from_numpy(y / SCALE)))
    assert got == pytest.approx(want, rel=1e-10)
    # served as softmax is: probabilities over the same edges, point the midpoint mean
    probs, per_row_edges = model.served(torch.from_numpy(raw))
    dist = Histogram(probs=probs.numpy(), edges=per_row_edges.numpy())
    np.testing.assert_allclose(model.restore(torch.from_numpy(raw)).numpy(), dist.mean())


def test_distill_softmax_gets_softmax_edges_from_the_config() -> None:
    config = BaselineConfig(model="distill_softmax", hidden=(8,))

    class _Fitted:  # build_model reads only these two
        cardinalities = (4,)
        numeric_width = 1

    model = build_model(config, _Fitted(), np.zeros(1))  # type: ignore[arg-type]
    want = exponential_bucket_edges(config.n_buckets, config.bucket_first_s, config.bucket_top_s)
    np.testing.assert_allclose(model.edges_s.numpy(), want, rtol=1e-6)  # type: ignore[operator]


# ----- TPM --------------------------------------------------------------------------------------


def test_tpm_leaf_probabilities_are_the_path_products() -> None:
    edges = [0.0, 1.0, 5.0, 20.0, 60.0]  # 4 leaves, 3 nodes: root 0, left 1, right 2
    model = _tiny(TreeProgressive, edges_s=edges)
    raw = np.random.default_rng(7).normal(0, 2, (25, 3))
    s = 1 / (1 + np.exp(-raw))  # P(upper child | node)
    hand = np.stack(
        [
            (1 - s[:, 0]) * (1 - s[:, 1]),
            (1 - s[:, 0]) * s[:, 1],
            s[:, 0] * (1 - s[:, 2]),
            s[:, 0] * s[:, 2],
        ],
        axis=1,
    )
    assert isinstance(model, TreeProgressive)
    probs, _ = model.served(torch.from_numpy(raw))
    np.testing.assert_allclose(probs.numpy(), hand, rtol=1e-12)
    np.testing.assert_allclose(probs.numpy().sum(1), 1.0, rtol=1e-12)
    # an 8-leaf tree: every leaf's path has 3 nodes, and the leaves still sum to 1
    right, left = path_matrices(8)
    assert np.all((right + left).sum(1) == 3)
    assert right[5].nonzero()[0].tolist() == [0, 5] and left[5].nonzero()[0].tolist() == [2]
    big = _tiny(TreeProgressive, edges_s=[0.0, *range(1, 8), 10.0])
    p8, _ = big.served(torch.randn(10, 7, dtype=torch.float64) * 3)
    np.testing.assert_allclose(p8.numpy().sum(1), 1.0, rtol=1e-12)


def test_tpm_loss_by_hand() -> None:
    edges = [0.0, 1.0, 5.0, 20.0, 60.0]
    model = _tiny(TreeProgressive, edges_s=edges)
    assert isinstance(model, TreeProgressive)
    raw = np.random.default_rng(8).normal(0, 1.5, (12, 3))
    y = np.array([0.0, 0.5, 1.0, 3.0, 5.0, 7.0, 19.9, 20.0, 33.0, 80.0, 4.99, 2.0])
    s = 1 / (1 + np.exp(-raw))
    centres = np.array([0.5, 3.0, 12.5, 40.0]) / SCALE
    total = 0.0
    for i, v in enumerate(y):
        # the classifiers on the label's path and their targets: root (upper = leaf >= 2),
        # then node 1 (leaf 1 vs 0) or node 2 (leaf 3 vs 2)
        leaf = sum(v >= e for e in edges[1:-1])
        up = leaf >= 2
        second = 2 if up else 1
        bce = -math.log(s[i, 0] if up else 1 - s[i, 0])
        bce -= math.log(s[i, second] if leaf % 2 else 1 - s[i, second])
        p = [
            (1 - s[i, 0]) * (1 - s[i, 1]),
            (1 - s[i, 0]) * s[i, 1],
            s[i, 0] * (1 - s[i, 2]),
            s[i, 0] * s[i, 2],
        ]
        mean = float(np.dot(p, centres))
        var = float(np.dot(p, (centres - mean) ** 2))
        total += bce + 0.2 * (mean - v / SCALE) ** 2 + model.std_weight * math.sqrt(var + 1e-8)
    got = float(model.loss(torch.from_numpy(raw), torch.from_numpy(y / SCALE)))
    assert got == pytest.approx(total / len(y), rel=1e-10)
    probs, per_row = model.served(torch.from_numpy(raw))
    dist = Histogram(probs=probs.numpy(), edges=per_row.numpy())
    np.testing.assert_allclose(model.restore(torch.from_numpy(raw)).numpy(), dist.mean())


def test_tpm_edges_are_quantiles_increasing_with_the_open_leaf_at_the_tail_mean() -> None:
    y = _labels(40_000, 9)
    edges = tpm_edges(y, n_leaves=16)
    assert len(edges) == 17 and edges[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(edges))
    # 10 % zeros: the first cut is pushed off 0; later cuts are the 1/16 quantiles
    assert edges[1] == pytest.approx(0.1)
    for k in range(3, 16):
        assert edges[k] == pytest.approx(np.quantile(y, k / 16), abs=1e-3)
    tail = y[y >= edges[15]]
    assert 0.5 * (edges[15] + edges[16]) == pytest.approx(tail.mean(), abs=1e-3)


# ----- a short run and its checkpoint ----------------------------------------------------------


@pytest.fixture(scope="module")
def split() -> object:
    from model_export.data import load_joined, split_by_day

    return split_by_day(load_joined())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["huberpp", "tpm"])
def test_a_short_run_round_trips_its_head_constants(
    split: object, tmp_path: Path, name: str
) -> None:
    """The validation-day spread (and its family) and TPM's leaves survive the checkpoint."""
    from model_export.evaluation.runs import run_baseline
    from model_export.training.baselines import BaselineRun, baseline_distribution
    from model_export.training.checkpoint import load_run, save_run
    from tests.offline.test_baselines import small_prepared

    prepared = small_prepared(split)
    config = BaselineConfig(model=name, hidden=(32, 16), max_epochs=2, batch_size=512)
    run = run_baseline(prepared, config, progress=False)
    assert np.isfinite(run.metrics["nll"]) and np.isfinite(run.metrics["mae_point"])
    save_run(run, tmp_path / "checkpoint.pt")
    again = load_run(tmp_path / "checkpoint.pt", BaselineRun)
    assert again.model.family == run.model.family
    assert again.model.extras() == run.model.extras()
    a = baseline_distribution(run, prepared.test)
    b = baseline_distribution(again, prepared.test)
    np.testing.assert_array_equal(a.mean(), b.mean())
    np.testing.assert_array_equal(a.point(), b.point())
