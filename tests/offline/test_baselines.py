"""Baselines: losses against hand computations, restorations against the served families,
ONNX against torch, and the training plumbing on small slices."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from model_export.data import load_joined, raw_columns, split_by_day
from model_export.data.features import fit_features
from model_export.data.prepared import Prepared, encode, prepare_split, training_window
from model_export.evaluation.runs import run_baseline
from model_export.evaluation.served import load_served, served_distribution, served_params
from model_export.export.model_dir import write_model_dir
from model_export.models.baseline import BaselineModel, ServingBaseline
from model_export.models.cread import CREAD, cread_thresholds, running_min, survival_mean
from model_export.models.d2q import MIN_TOP_S, TABLE_POINTS, DurationGroups, DurationQuantile
from model_export.models.registry import SERVED
from model_export.models.softmax import BucketSoftmax, exponential_bucket_edges
from model_export.models.vr import ValueRegression, fit_normal_scale
from model_export.models.wlr import WeightedLogistic
from model_export.models.ziln import ZeroInflatedLognormal
from model_export.training.baselines import (
    BaselineRun,
    baseline_distribution,
    build_model,
    d2q_inputs,
)
from model_export.training.checkpoint import load_run, save_run
from model_export.training.config import BaselineConfig, TrainConfig
from service.distributions import Histogram, Quantile, Survival, get_family
from service.manifest import Manifest
from tests.support import MODELS

SCALE = 10.0


@pytest.fixture(scope="module")
def split() -> Iterator[object]:
    yield split_by_day(load_joined())


def _tiny(cls: type[BaselineModel], **kw: object) -> BaselineModel:
    torch.manual_seed(0)
    return cls([4], 1, hidden=(8,), label_scale=SCALE, **kw).double().eval()  # type: ignore[call-arg]


def _labels(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.lognormal(1.5, 1.3, n)
    y[: n // 10] = 0.0
    return y


# ----- losses against hand computations -----------------------------------------------------


def test_shared_budget_is_egmns() -> None:
    egmn = TrainConfig()
    base = BaselineConfig(model="vr")
    shared = BaselineConfig.shared_fields()
    assert "lr" in shared and "max_epochs" in shared and "model" not in shared
    for name in shared:
        assert getattr(base, name) == getattr(egmn, name), name


def test_vr_loss_is_the_mse_of_scaled_labels() -> None:
    model = _tiny(ValueRegression)
    raw = torch.randn(50, 1, dtype=torch.float64) * 2
    y = _labels(50)
    got = float(model.loss(raw, torch.from_numpy(y / SCALE)))
    assert got == pytest.approx(np.mean((raw.numpy()[:, 0] - y / SCALE) ** 2), rel=1e-12)
    np.testing.assert_allclose(model.restore(raw).numpy(), raw.numpy()[:, 0] * SCALE)


def test_wlr_loss_is_the_weighted_logistic_loss() -> None:
    model = _tiny(WeightedLogistic)
    z = np.random.default_rng(1).normal(0, 2, 60)
    y = _labels(60, 1) / SCALE
    p = 1 / (1 + np.exp(-z))
    want = np.mean(-y * np.log(p) - np.log(1 - p))
    got = float(model.loss(torch.from_numpy(z[:, None]), torch.from_numpy(y)))
    assert got == pytest.approx(want, rel=1e-10)
    # Over a constant, the loss is stationary exactly at exp(z) = mean(y): the odds are E[y].
    zs = torch.full((60, 1), math.log(float(y.mean())), dtype=torch.float64, requires_grad=True)
    model.loss(zs, torch.from_numpy(y)).backward()
    assert zs.grad is not None and abs(float(zs.grad.sum())) < 1e-12


def test_ziln_loss_is_bce_plus_lognormal_nll() -> None:
    model = _tiny(ZeroInflatedLognormal)
    rng = np.random.default_rng(2)
    raw = rng.normal(0, 1, (80, 3))
    y = _labels(80, 2) / SCALE
    logit, mu = raw[:, 0], raw[:, 1]
    sigma = np.log1p(np.exp(raw[:, 2])) + 1e-3
    pos = y > 0
    p = 1 / (1 + np.exp(-logit))
    bce = -np.mean(np.where(pos, np.log(p), np.log(1 - p)))
    logpdf = stats.lognorm.logpdf(np.where(pos, y, 1.0), s=sigma, scale=np.exp(mu))
    want = bce + np.mean(np.where(pos, -logpdf, 0.0))
    got = float(model.loss(torch.from_numpy(raw), torch.from_numpy(y)))
    assert got == pytest.approx(want, rel=1e-10)


def test_softmax_loss_is_the_cross_entropy_of_the_histogram_bucket() -> None:
    edges = exponential_bucket_edges(6, 0.5, 100.0)
    model = _tiny(BucketSoftmax, edges_s=edges)
    rng = np.random.default_rng(3)
    raw = rng.normal(0, 1, (70, 6))
    y = _labels(70, 3)
    # The histogram family's own bucket rule: number of interior edges at or below y.
    j = np.array([sum(e <= v for e in edges[1:-1]) for v in y])
    logp = raw - np.log(np.exp(raw).sum(1, keepdims=True))
    want = -np.mean(logp[np.arange(70), j])
    got = float(model.loss(torch.from_numpy(raw), torch.from_numpy(y / SCALE)))
    assert got == pytest.approx(want, rel=1e-9)
    probs = np.exp(logp)
    mids = 0.5 * (np.array(edges[1:]) + np.array(edges[:-1]))
    np.testing.assert_allclose(model.restore(torch.from_numpy(raw)).numpy(), probs @ mids)


def test_cread_loss_is_bce_plus_monotonicity_plus_huber() -> None:
    thr = [1.0, 3.0, 8.0, 20.0, 60.0]
    model = _tiny(CREAD, thresholds_s=thr, monotone_weight=0.7, huber_weight=0.3, huber_delta=1.0)
    rng = np.random.default_rng(4)
    raw = rng.normal(0, 2, (40, 5))
    y = _labels(40, 4) / SCALE
    t = np.array(thr) / SCALE
    s = 1 / (1 + np.exp(-raw))
    want = 0.0
    for i in range(40):
        target = (y[i] > t).astype(float)
        bce = -np.sum(target * np.log(s[i]) + (1 - target) * np.log(1 - s[i]))
        mono = sum(max(0.0, s[i, m + 1] - s[i, m]) for m in range(4))
        # restored mean: trapezoids from (0, 1) through each threshold, tail S_M * last width
        pts_t, pts_s = [0.0, *t], [1.0, *s[i]]
        body = sum((pts_t[m + 1] - pts_t[m]) * (pts_s[m] + pts_s[m + 1]) / 2 for m in range(len(t)))
        restored = body + s[i, -1] * (t[-1] - t[-2])
        r = abs(restored - y[i])
        huber = 0.5 * r * r if r <= 1.0 else r - 0.5
        want += bce + 0.7 * mono + 0.3 * huber
    got = float(model.loss(torch.from_numpy(raw), torch.from_numpy(y)))
    assert got == pytest.approx(want / 40, rel=1e-10)


def _d2q(levels: tuple[float, ...] = (0.1, 0.5, 0.9)) -> DurationQuantile:
    """A tiny D2Q with two known groups and a hand-made table (group 0: unknown)."""
    table = np.stack(
        [
            np.linspace(0.0, 10.0, TABLE_POINTS),
            np.linspace(0.0, 1.0, TABLE_POINTS) ** 2 * 50.0,
            np.where(np.linspace(0, 1, TABLE_POINTS) < 0.3, 0.0, 20.0),
        ]
    )
    torch.manual_seed(0)
    model = DurationQuantile(
        [4],
        2,
        table=table,
        cuts_z=[0.25],
        duration_column=0,
        missing_column=1,
        levels=levels,
        hidden=(8,),
        label_scale=SCALE,
    )
    return model.double().eval()


def _logits(raw: np.ndarray) -> np.ndarray:
    """The head's level logits by hand: the first, then cumulated softplus increments."""
    inc = np.log1p(np.exp(raw[:, 1:]))
    return np.cumsum(np.concatenate([raw[:, :1], inc], axis=1), axis=1)


def test_d2q_loss_is_the_pinball_loss_of_levels() -> None:
    model = _d2q()
    rng = np.random.default_rng(5)
    raw = np.concatenate([rng.normal(0, 2, (30, 3)), np.ones((30, 1))], axis=1)
    target = rng.random(30)
    level = 1 / (1 + np.exp(-_logits(raw[:, :3])))
    assert (np.diff(level, axis=1) > 0).all()  # rising by construction
    taus = np.array([0.1, 0.5, 0.9], dtype=np.float32).astype(np.float64)  # float32 buffers
    want = 0.0
    for i in range(30):
        for k in range(3):
            u = target[i] - level[i, k]
            want += taus[k] * u if u >= 0 else (taus[k] - 1) * u
    got = float(model.loss(torch.from_numpy(raw), torch.from_numpy(target)))
    assert got == pytest.approx(want / 90, rel=1e-12)
    np.testing.assert_allclose(model.level(torch.from_numpy(raw)).numpy(), level[:, 1])


def test_d2q_groups_and_served_values_by_hand() -> None:
    model = _d2q()
    # numeric: encoded duration, missing indicator. Cut at z = 0.25 (on it: the upper group).
    numeric = torch.tensor(
        [[0.0, 0.0], [0.25, 0.0], [3.0, 0.0], [3.0, 1.0], [-9.0, 0.0]], dtype=torch.float64
    )
    groups = model.group_of(numeric).numpy()
    np.testing.assert_array_equal(groups, [1, 2, 2, 0, 1])
    raw = torch.cat(
        [
            torch.tensor([[-1.0, 0.3, 0.8]] * 5, dtype=torch.float64),
            torch.from_numpy(groups)[:, None],
        ],
        dim=1,
    )
    level = 1 / (1 + np.exp(-_logits(raw.numpy()[:, :3])))
    grid = np.linspace(0.0, 1.0, TABLE_POINTS)
    table = model.table_s.double().numpy()  # type: ignore[union-attr, operator]
    want = np.array([np.interp(level[i], grid, table[int(g)]) for i, g in enumerate(groups)])
    want[:, -1] = np.maximum(want[:, -1], MIN_TOP_S)
    levels, values, point = (t.numpy() for t in model.served(raw))
    np.testing.assert_allclose(values, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(point, values[:, 1])
    np.testing.assert_array_equal(levels, np.tile([0.1, 0.5, 0.9], (5, 1)).astype(np.float32))
    np.testing.assert_array_equal(model.restore(raw).numpy(), point)
    dist = Quantile(levels=levels, values=values, point=point)
    np.testing.assert_allclose(dist.icdf(np.array([0.5]))[:, 0], point, rtol=1e-12)
    # Group 2's table is 0 below level 0.3 and 20 s above: a level under 0.3 gives 0 s,
    # and the top is floored so the family's tail has a scale.
    low = torch.tensor([[-5.0, -30.0, -30.0, 2.0]], dtype=torch.float64)
    _, v, _ = model.served(low)
    assert v[0, :2].tolist() == [0.0, 0.0] and v[0, 2] == pytest.approx(MIN_TOP_S)


def test_d2q_needs_the_median_and_its_groups(split: object) -> None:
    with pytest.raises(ValueError, match="median"):
        _d2q(levels=(0.1, 0.9))
    fitted = fit_features(split.train.iloc[:2_000])  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="duration groups"):
        build_model(BaselineConfig(model="d2q"), fitted, np.zeros(1))


# ----- restorations against the served families -----------------------------------------------


def test_survival_mean_and_running_min_match_the_family() -> None:
    rng = np.random.default_rng(7)
    thr = np.array([0.5, 1.0, 4.0, 9.0, 30.0])
    sf = rng.random((100, 5))
    mono = running_min(torch.from_numpy(sf)).numpy()
    np.testing.assert_array_equal(mono, np.minimum.accumulate(sf, axis=1))
    want = Survival(thresholds=thr, sf=sf).mean()
    got = survival_mean(torch.from_numpy(mono), torch.from_numpy(thr)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_cread_served_survival_has_mass_in_every_segment() -> None:
    model = _tiny(CREAD, thresholds_s=[1.0, 2.0, 3.0])
    raw = torch.tensor([[5.0, 9.0, -200.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    thr, sf = model.served(raw)
    dist = Survival(thresholds=thr.numpy(), sf=sf.numpy())
    assert np.all(dist.mass > 0)
    assert np.all(np.isfinite(dist.log_prob(np.array([0.5, 1.5, 2.5, 10.0]))))
    np.testing.assert_allclose(model.restore(raw).numpy(), dist.mean(), rtol=1e-12)


def test_histogram_restore_is_the_family_mean() -> None:
    edges = exponential_bucket_edges(8, 0.5, 200.0)
    model = _tiny(BucketSoftmax, edges_s=edges)
    raw = torch.randn(20, 8, dtype=torch.float64)
    probs, per_row_edges = model.served(raw)
    assert per_row_edges.shape == (20, 9)
    dist = Histogram(probs=probs.numpy(), edges=per_row_edges.numpy())
    np.testing.assert_allclose(model.restore(raw).numpy(), dist.mean(), rtol=1e-12)


def test_cread_thresholds_are_positive_increasing_and_reach_the_tail() -> None:
    y = _labels(20_000, 8)
    thr = cread_thresholds(y, n_thresholds=30, alpha=2.0)
    assert thr[0] > 0 and all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(thr))
    flat = cread_thresholds(y, n_thresholds=30, alpha=1e-6)  # ~ equal frequency
    assert thr[-1] > flat[-1]  # the warp moves points into the long tail


def test_normal_scale_fit_recovers_the_spread() -> None:
    rng = np.random.default_rng(9)
    loc = rng.uniform(-5, 40, 20_000)
    y = np.maximum(loc + rng.normal(0, 12.0, loc.size), 0.0)
    assert fit_normal_scale(loc, y) == pytest.approx(12.0, rel=0.03)


def test_duration_groups_levels_and_quantiles() -> None:
    rng = np.random.default_rng(10)
    d = rng.uniform(5_000, 200_000, 5_000)
    d[:100] = 0.0  # unknown duration
    y = rng.exponential(d / 3000.0)
    groups = DurationGroups.fit(d, y, n_groups=8)
    g = groups.group(d)
    assert groups.n_groups == 9 and set(np.unique(g)) == set(range(9))
    assert np.all(g[:100] == 0)
    level = groups.level(y, g)
    assert np.all((level > 0) & (level < 1))
    # Mid-rank levels of the training labels are uniform within each group.
    for k in range(1, 9):
        assert abs(level[g == k].mean() - 0.5) < 0.01
    # The quantile function inverts the level exactly on distinct training labels.
    np.testing.assert_allclose(groups.quantile(level, g), y, rtol=1e-9, atol=1e-9)
    again = DurationGroups.from_state(groups.state())
    np.testing.assert_array_equal(again.group(d), g)
    # The table is the quantile function at evenly spaced levels, rising in every group.
    table = groups.table()
    assert table.shape == (9, TABLE_POINTS) and (np.diff(table, axis=1) >= 0).all()
    grid = np.linspace(0.0, 1.0, TABLE_POINTS)
    np.testing.assert_allclose(table[3], groups.quantile(grid, np.full(grid.size, 3)))


def test_d2q_graph_finds_the_groups_of_every_day(split: object) -> None:
    """The graph's group (float32 encoded duration against encoded cuts) is numpy's, on
    every row of the three periods, and on durations that are missing, 0, negative or on a cut."""
    train: pd.DataFrame = split.train  # type: ignore[attr-defined]
    y = train["watch_time_s"].to_numpy()
    groups = DurationGroups.fit(train["duration_ms"].to_numpy(np.float64), y, 30)
    assert np.all(groups.cuts % 1 == 0.5)  # half-way between whole milliseconds
    fitted = fit_features(train)
    model = DurationQuantile(
        fitted.cardinalities, fitted.numeric_width, **d2q_inputs(fitted, groups)
    )  # type: ignore[arg-type]
    odd = train.iloc[:6].copy()
    odd["duration_ms"] = [np.nan, 0.0, -5.0, groups.cuts[3] - 0.5, groups.cuts[3] + 0.5, 1e9]
    for part in (train, split.validation, split.test, odd):  # type: ignore[attr-defined]
        enc = encode(fitted, part)
        got = model.group_of(enc.numeric).numpy().astype(np.int64)
        np.testing.assert_array_equal(got, groups.group(part["duration_ms"].to_numpy(np.float64)))


# ----- export: ONNX vs torch, manifest, served family vs torch restoration ---------------------


def _perturb_batchnorm(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVED)
def test_exported_baseline_matches_torch(split: object, tmp_path: Path, name: str) -> None:
    train: pd.DataFrame = split.train.iloc[:20_000]  # type: ignore[attr-defined]
    rows: pd.DataFrame = split.test.iloc[:2_000]  # type: ignore[attr-defined]
    fitted = fit_features(train)
    config = BaselineConfig(model=name, hidden=(32, 16))
    torch.manual_seed(5)
    y = train["watch_time_s"].to_numpy()
    groups = None
    if name == "d2q":
        groups = DurationGroups.fit(train["duration_ms"].to_numpy(np.float64), y, 30)
    model = build_model(config, fitted, y, groups=groups)
    _perturb_batchnorm(model)
    if isinstance(model, ValueRegression):
        model.scale_s.fill_(17.5)  # type: ignore[operator]
    model.eval()
    serving = ServingBaseline(model)
    model_dir = tmp_path / name / "1"
    manifest = write_model_dir(
        model_dir,
        serving,
        fitted,
        name=name,
        version="1",
        window=training_window(split),  # type: ignore[arg-type]
        evaluation=None,
        extras=model.extras(),
        family=str(model.family),
    )
    assert Manifest.read(model_dir / "manifest.json") == manifest
    assert manifest.family == model.family
    exported = load_served(model_dir)
    enc = encode(fitted, rows)
    with torch.no_grad():
        raw = model(enc.categorical, enc.numeric)
        reference = dict(zip(serving.output_names(), model.served(raw), strict=True))
        restored = model.restore(raw).double().numpy()
    for n in (1, 5, len(rows)):  # dynamic batch dimension, every output per row
        got = served_params(
            exported, raw_columns(rows.iloc[:n], exported.manifest.source_columns())
        )
        assert set(got) == set(reference)
        for key, value in got.items():
            want = reference[key][:n].double().numpy()
            assert value.shape == want.shape, key
            # float32 graphs: relative to each output's own magnitude. D2Q's seconds are a
            # group's quantile function at a float32 level: where the function is steep (its
            # top 0.1% of levels spans hundreds of seconds), a level's last bit moves them by
            # up to 1e-4 relative.
            rtol = 2e-4 if name == "d2q" and key != "levels" else 2e-5
            atol = 1e-5 * float(np.abs(want).max()) + 1e-12
            np.testing.assert_allclose(value, want, rtol=rtol, atol=atol, err_msg=key)
    dist = served_distribution(exported, raw_columns(rows, exported.manifest.source_columns()))
    assert type(dist) is get_family(str(model.family))
    atol = 1e-5 * float(np.abs(restored).max())
    rtol = 2e-4 if name == "d2q" else 1e-4
    np.testing.assert_allclose(dist.point(), np.maximum(restored, 0.0), rtol=rtol, atol=atol)
    assert np.all(np.isfinite(dist.mean())) and np.all(np.isfinite(dist.icdf([0.1, 0.5, 0.9])))


# ----- training plumbing on a small slice --------------------------------------------------------


def small_prepared(split: object, n_train: int = 6_000, n_eval: int = 1_500) -> Prepared:
    """A Prepared of a few thousand rows per day range, so a run takes seconds."""
    s = dataclasses.replace(
        split,  # type: ignore[type-var]
        train=split.train.iloc[:n_train].reset_index(drop=True),  # type: ignore[attr-defined]
        validation=split.validation.iloc[:n_eval].reset_index(drop=True),  # type: ignore[attr-defined]
        test=split.test.iloc[:n_eval].reset_index(drop=True),  # type: ignore[attr-defined]
    )
    return prepare_split(s)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cread", "d2q"])
def test_a_short_run_learns_and_round_trips(split: object, tmp_path: Path, name: str) -> None:
    prepared = small_prepared(split)
    config = BaselineConfig(model=name, hidden=(32, 16), max_epochs=3, batch_size=512)
    run = run_baseline(prepared, config, progress=False)
    assert run.history.train_loss[-1] < run.history.train_loss[0]  # it learns
    best = run.history.validation_nll[run.history.best_epoch]
    assert best == min(run.history.validation_nll)  # the best epoch is the one kept
    assert np.isfinite(run.metrics["mae_point"]) and np.isfinite(run.metrics["xauc_point"])
    save_run(run, tmp_path / "checkpoint.pt")
    again = load_run(tmp_path / "checkpoint.pt", BaselineRun)
    if name == "d2q":
        assert again.groups is not None and again.groups.n_groups == run.groups.n_groups  # type: ignore[union-attr]
    a = baseline_distribution(run, prepared.test).mean()
    b = baseline_distribution(again, prepared.test).mean()
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVED)
def test_built_baseline_reproduces_its_manifest(split: object, name: str) -> None:
    """A shipped baseline directory (written by ``make models``) scores what its manifest says."""
    model_dir = MODELS / name / "1"
    assert (model_dir / "manifest.json").exists(), f"{model_dir} missing: run make models"
    assert (model_dir / "ATTRIBUTION.txt").read_text().count("CC BY-SA 4.0") >= 1
    from model_export.data import labels
    from model_export.evaluation.metrics import evaluate_distribution

    model = load_served(model_dir)
    assert model.manifest.family == get_family(model.manifest.family).family
    assert model.manifest.evaluation is not None
    test: pd.DataFrame = split.test  # type: ignore[attr-defined]
    dist = served_distribution(model, raw_columns(test, model.manifest.source_columns()))
    got = evaluate_distribution(dist, labels(test))
    for key, value in model.manifest.evaluation.metrics.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-4), key


def test_every_named_baseline_has_a_head_and_every_head_a_name() -> None:
    from model_export.models.names import ALL
    from model_export.models.registry import BASELINES

    assert sorted(BASELINES) == sorted(ALL)
    assert len(set(ALL)) == len(ALL)
