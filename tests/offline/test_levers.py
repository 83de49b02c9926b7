"""The issue-16 levers: the DCN-v2 trunk, the point head, the CRPS term and the history
window, each off by default."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model_export.data import load_joined, raw_columns, split_by_day
from model_export.data.features import FittedFeatures, fit_features
from model_export.data.history import (
    HISTORY_FIELDS,
    PRIOR_VIEWS,
    STATISTICS,
    HistoryOptions,
    feature_name,
    fit_history_features,
    join_history,
)
from model_export.data.kuairand import LABEL, Split
from model_export.data.prepared import encode, history_tables, training_window
from model_export.evaluation.metrics import crps as metric_crps
from model_export.evaluation.served import load_served, served_params
from model_export.export.model_dir import write_model_dir
from model_export.models.backbone import (
    CrossMLPBackbone,
    CrossNetwork,
    MLPBackbone,
    Trunk,
    TrunkOptions,
)
from model_export.models.egm import EGMParams, crps, egmn_loss, paper_point, point
from model_export.models.egmn import EGMN, ServingEGMN
from model_export.training.egmn import duration_log_ms
from service.distributions import EGM

# ----- the cross network --------------------------------------------------------------


@pytest.mark.parametrize("rank", [0, 4])
def test_cross_network_keeps_the_width_and_starts_at_the_identity(rank: int) -> None:
    torch.manual_seed(0)
    net = CrossNetwork(12, n_layers=3, rank=rank)
    x = torch.randn(5, 12)
    assert net(x).shape == (5, 12)
    with torch.no_grad():
        for layer in net.layers:
            last = layer[-1] if isinstance(layer, torch.nn.Sequential) else layer
            last.weight.zero_()
    torch.testing.assert_close(net(x), x)  # x0 * 0 + x at every layer


def test_cross_layer_is_dcn_v2s_formula() -> None:
    torch.manual_seed(1)
    net = CrossNetwork(6, n_layers=2, rank=0).double()
    x0 = torch.randn(4, 6, dtype=torch.float64)
    x = x0
    for layer in net.layers:
        x = x0 * (x @ layer.weight.T + layer.bias) + x
    torch.testing.assert_close(net(x0), x)


def test_low_rank_has_fewer_weights() -> None:
    full = sum(p.numel() for p in CrossNetwork(100, 2, 0).parameters())
    low = sum(p.numel() for p in CrossNetwork(100, 2, 8).parameters())
    assert full == 2 * (100 * 100 + 100)
    assert low == 2 * (100 * 8 + 8 * 100 + 100)


def test_trunk_options_set_widths_and_the_duration_product() -> None:
    cards, names, numeric = [9, 8, 7, 5], ["user_id", "video_id", "author_id", "tab"], ["a"]
    numeric = ["freshness_days", "duration_ms", "duration_ms__missing"]
    options = TrunkOptions(
        embedding_dim=4, id_embedding_dim=6, cross_layers=2, cross_rank=3, duration_user=True
    )
    trunk = Trunk(cards, 3, options=options, categorical_names=names, numeric_names=numeric)
    assert [e.embedding_dim for e in trunk.embeddings] == [6, 6, 6, 4]
    in_dim = 6 * 3 + 4 + 3 + 6  # embeddings, numeric, user embedding x duration
    assert trunk.layout.in_dim == in_dim
    assert isinstance(trunk.backbone, CrossMLPBackbone)
    assert trunk.out_dim == 64 + in_dim
    cat = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]])
    num = torch.tensor([[0.1, 2.0, 0.0], [0.3, -1.0, 1.0]])
    x0 = trunk.layout.x0(trunk.embeddings, cat, num)
    user = trunk.embeddings[0](cat[:, 0])
    torch.testing.assert_close(x0[:, -6:], user * num[:, 1:2])
    assert trunk.eval()(cat, num).shape == (2, trunk.out_dim)
    with pytest.raises(ValueError, match="duration_user"):
        Trunk(cards, 3, options=options, categorical_names=names, numeric_names=["x", "y", "z"])


def test_default_trunk_is_the_papers() -> None:
    """No option set: the same modules, weights and state keys as before the options."""
    torch.manual_seed(5)
    trunk = Trunk([9, 8], 3, embedding_dim=4, hidden=(8,))
    torch.manual_seed(5)
    embeddings = [torch.nn.Embedding(c, 4) for c in (9, 8)]
    for emb in embeddings:
        torch.nn.init.normal_(emb.weight, std=0.05)
    mlp = MLPBackbone(4 * 2 + 3, (8,))
    assert isinstance(trunk.backbone, MLPBackbone)
    keys = {k for k in trunk.state_dict() if not k.startswith("layout")}
    assert keys == {f"embeddings.{i}.weight" for i in range(2)} | {
        f"backbone.{k}" for k in mlp.state_dict()
    }
    torch.testing.assert_close(trunk.embeddings[1].weight, embeddings[1].weight)
    torch.testing.assert_close(trunk.backbone.net[0].weight, mlp.net[0].weight)
    egmn = EGMN([9, 8], 3, embedding_dim=4, hidden=(8,))
    assert egmn.point_head is None and isinstance(egmn.backbone, MLPBackbone)


def test_free_means_drop_the_bound_and_nothing_else() -> None:
    """With free_means the same weights give mu_k = softplus(linear), the paper's mu_k minus
    1/lambda; without it every mean stays at or above 1/lambda."""
    torch.manual_seed(11)
    bound = EGMN([9, 8], 3, embedding_dim=4, hidden=(8,), n_gaussians=4).eval()
    free = EGMN([9, 8], 3, embedding_dim=4, hidden=(8,), n_gaussians=4, free_means=True).eval()
    free.load_state_dict(bound.state_dict())
    with torch.no_grad():
        bound.mu_head.bias.fill_(-6.0)  # softplus(-6) ~ 0.0025: the bound is what is left
        free.mu_head.bias.fill_(-6.0)
        categorical = torch.tensor([[1, 2], [3, 4], [8, 7]])
        numeric = torch.randn(3, 3)
        p_bound, p_free = bound(categorical, numeric), free(categorical, numeric)
    floor = (1.0 / p_bound.lam).unsqueeze(1)
    assert bool((p_bound.mu >= floor).all())
    torch.testing.assert_close(p_bound.mu - floor, p_free.mu)
    assert bool((p_free.mu < floor).all())
    torch.testing.assert_close(p_bound.sigma, p_free.sigma)
    torch.testing.assert_close(p_bound.log_w, p_free.log_w)


def test_duration_anchor_centres_the_last_gaussian_on_the_duration() -> None:
    mean, std = 11.0, 1.1
    names = ["x", "duration_ms"]
    torch.manual_seed(2)
    model = EGMN(
        [9],
        2,
        embedding_dim=4,
        hidden=(8,),
        n_gaussians=3,
        categorical_names=["c"],
        numeric_names=names,
        duration_anchor=True,
        duration_log_ms=(mean, std),
        label_scale=10.0,
    ).eval()
    seconds = torch.tensor([2.0, 30.0, 95.0, 600.0], dtype=torch.float64)
    z = (torch.log1p(seconds * 1000.0) - mean) / std
    numeric = torch.stack([torch.randn(4, dtype=torch.float64), z], dim=1).float()
    with torch.no_grad():
        params = model(torch.tensor([[1], [2], [3], [4]]), numeric)
    centre = params.mu[:, -1].double() * 10.0  # back to seconds
    assert bool(((centre / seconds - 1.0).abs() <= 0.1 + 1e-5).all())
    assert bool((params.sigma[:, -1] >= 0.005 * params.mu[:, -1] - 1e-7).all())
    assert "duration_mean" in model.state_dict()  # a checkpoint carries the transform
    with pytest.raises(ValueError, match="duration_ms"):
        EGMN([9], 2, hidden=(8,), numeric_names=["x", "y"], duration_anchor=True)


# ----- the CRPS term --------------------------------------------------------------------


def _random_params(n: int, k: int, seed: int, point_mass: bool) -> EGMParams:
    """Parameters in scaled units (10 s), as training sees them."""
    g = torch.Generator().manual_seed(seed)
    n_w = k + 1 + int(point_mass)
    return EGMParams(
        lam=0.2 + 3.0 * torch.rand(n, generator=g, dtype=torch.float64),
        log_w=torch.log_softmax(torch.randn(n, n_w, generator=g, dtype=torch.float64), dim=1),
        mu=-2.0 + 15.0 * torch.rand(n, k, generator=g, dtype=torch.float64),
        sigma=0.1 + 4.0 * torch.rand(n, k, generator=g, dtype=torch.float64),
        point_mass=point_mass,
    )


def _served(params: EGMParams) -> EGM:
    w = torch.exp(params.log_w).numpy()
    out = {
        "lambda": params.lam.numpy(),
        "weights": w[:, 1:] if params.point_mass else w,
        "mu": params.mu.numpy(),
        "sigma": params.sigma.numpy(),
    }
    if params.point_mass:
        out["p0"] = w[:, 0]
    return EGM.from_params(out)


@pytest.mark.parametrize("point_mass", [True, False])
def test_crps_term_matches_the_metric_and_monte_carlo(point_mass: bool) -> None:
    params = _random_params(40, 5, seed=2, point_mass=point_mass)
    g = torch.Generator().manual_seed(3)
    y = 6.0 * torch.rand(40, generator=g, dtype=torch.float64)
    y[:3] = 0.0
    got = crps(params, y)
    dist = _served(params)
    for i in range(0, 40, 7):  # the offline metric's finer quadrature, row by row
        want = metric_crps(dist.take(np.array([i])), y[i : i + 1].numpy())
        assert float(got[i]) == pytest.approx(want, rel=6e-3, abs=1e-4)
    # Monte Carlo: CRPS = E|X - y| - E|X - X'| / 2, with draws by inverting the CDF.
    rng = np.random.default_rng(4)
    u = rng.uniform(size=(40, 4000))
    draws = np.stack([dist.take(np.array([i])).icdf(u[i])[0] for i in range(40)])
    half = draws.shape[1] // 2
    mc = np.abs(draws - y.numpy()[:, None]).mean(axis=1) - 0.5 * np.abs(
        draws[:, :half] - draws[:, half:]
    ).mean(axis=1)
    assert float(got.mean()) == pytest.approx(float(mc.mean()), rel=0.03)


def test_crps_term_has_finite_gradients_and_enters_the_loss() -> None:
    params = _random_params(16, 4, seed=6, point_mass=True)
    lam = params.lam.clone().requires_grad_(True)
    mu = params.mu.clone().requires_grad_(True)
    p = EGMParams(lam, params.log_w, mu, params.sigma, True)
    y = torch.linspace(0.0, 8.0, 16, dtype=torch.float64)
    loss, nll = egmn_loss(p, y, 0.1, 0.5, crps_weight=1.0)
    base, _ = egmn_loss(p, y, 0.1, 0.5)
    assert float((loss - base).detach()) == pytest.approx(float(crps(p, y).mean().detach()))
    loss.backward()
    assert lam.grad is not None and torch.isfinite(lam.grad).all()
    assert mu.grad is not None and torch.isfinite(mu.grad).all()
    del nll


# ----- the point head ---------------------------------------------------------------------


def test_point_head_is_what_the_l1_term_trains() -> None:
    params = _random_params(8, 3, seed=7, point_mass=True)
    given = torch.full((8,), 2.0, dtype=torch.float64)
    with_head = EGMParams(params.lam, params.log_w, params.mu, params.sigma, True, given)
    torch.testing.assert_close(point(with_head), given)
    torch.testing.assert_close(point(params), paper_point(params))


def test_service_egm_serves_the_given_point() -> None:
    dist = _served(_random_params(6, 3, seed=8, point_mass=True))
    params = dist.params()
    given = np.arange(6, dtype=np.float64)
    with_point = EGM.from_params({**params, "point": given})
    np.testing.assert_array_equal(with_point.point(), given)
    np.testing.assert_allclose(with_point.paper_point(), dist.point())
    np.testing.assert_allclose(with_point.mean(), dist.mean())
    np.testing.assert_array_equal(with_point.take(np.array([4, 1])).point(), [4.0, 1.0])
    assert "point" in with_point.params() and "point" not in params


@pytest.fixture(scope="module")
def split() -> Iterator[Split]:
    yield split_by_day(load_joined())


def _exported_like_torch(
    serving: ServingEGMN,
    fitted: FittedFeatures,
    split: Split,
    rows: pd.DataFrame,
    model_dir: Path,
) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """Export ``serving``, answer ``rows`` through the served graph, and require every
    parameter to equal torch's; returns both."""
    write_model_dir(
        model_dir,
        serving,
        fitted,
        name=model_dir.parent.name,
        version=model_dir.name,
        window=training_window(split),
        evaluation=None,
        extras={},
    )
    exported = load_served(model_dir)
    with torch.no_grad():
        enc = encode(fitted, rows)
        reference = dict(
            zip(serving.output_names(), serving(enc.categorical, enc.numeric), strict=True)
        )
    got = served_params(exported, raw_columns(rows, exported.manifest.source_columns()))
    assert set(got) == set(reference)
    for name, value in got.items():
        want = reference[name].double().numpy()
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=name)
    return got, reference


@pytest.mark.slow
def test_dcn_with_point_head_exports_like_torch(split: Split, tmp_path: Path) -> None:
    train = split.train.iloc[:30_000]
    rows = split.test.iloc[:2_000]
    fitted = fit_features(train)
    options = TrunkOptions(id_embedding_dim=24, cross_layers=2, cross_rank=8, duration_user=True)
    torch.manual_seed(3)
    model = EGMN(
        fitted.cardinalities,
        fitted.numeric_width,
        hidden=(32, 16),
        point_mass=True,
        options=options,
        categorical_names=fitted.inputs[0].columns,
        numeric_names=fitted.inputs[1].columns,
        point_head=True,
    )
    with torch.no_grad():  # BatchNorm statistics and cross weights away from their defaults
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        for layer in model.backbone.cross.layers:
            layer[-1].weight.normal_(0.0, 0.1)
    serving = ServingEGMN(model, None, 10.0).eval()
    assert serving.output_names() == ["lambda", "weights", "mu", "sigma", "p0", "point"]
    got, reference = _exported_like_torch(serving, fitted, split, rows, tmp_path / "dcn" / "1")
    dist = EGM.from_params(got)
    np.testing.assert_allclose(dist.point(), reference["point"].double().numpy(), rtol=1e-5)
    assert not np.allclose(dist.point(), dist.paper_point())


@pytest.mark.slow
def test_duration_anchor_exports_like_torch(split: Split, tmp_path: Path) -> None:
    train = split.train.iloc[:30_000]
    rows = split.test.iloc[:2_000]
    fitted = fit_features(train)
    torch.manual_seed(4)
    model = EGMN(
        fitted.cardinalities,
        fitted.numeric_width,
        hidden=(32, 16),
        point_mass=True,
        categorical_names=fitted.inputs[0].columns,
        numeric_names=fitted.inputs[1].columns,
        duration_anchor=True,
        duration_log_ms=duration_log_ms(fitted),
    )
    serving = ServingEGMN(model, None, 10.0).eval()
    got, _ = _exported_like_torch(serving, fitted, split, rows, tmp_path / "anchor" / "1")
    seconds = rows["duration_ms"].to_numpy(dtype=np.float64) / 1000.0
    known = seconds > 0.001
    ratio = got["mu"][known, -1] / seconds[known]
    assert np.all(np.abs(ratio - 1.0) <= 0.1 + 1e-4)


# ----- the history window -----------------------------------------------------------------


def _frames(split: Split) -> pd.DataFrame:
    return pd.concat([split.train, split.validation, split.test], ignore_index=True)


def test_history_options_validate_and_name_the_days() -> None:
    with pytest.raises(ValueError):
        HistoryOptions(counts="log")
    with pytest.raises(ValueError):
        HistoryOptions(window=-1)
    days = [1, 2, 3, 4, 5]
    assert HistoryOptions(window=3).days_before(days, 5) == [2, 3, 4]
    assert HistoryOptions(window=3).days_before(days, 2) == [1]
    assert HistoryOptions().days_before(days, 5) == [1, 2, 3, 4]
    assert HistoryOptions(counts="none").statistics() == STATISTICS[1:]


W3 = HistoryOptions(window=3, counts="per_day")


@pytest.mark.slow
def test_windowed_history_never_reads_its_own_day_or_later(split: Split) -> None:
    day = split.train_dates[4]
    rows = _frames(split)
    before = join_history(rows, history_tables(split, W3), W3)
    wild = Split(
        *(
            df.assign(**{LABEL: np.where(df["date"].astype("int64") >= day, 7777.0, df[LABEL])})
            for df in (split.train, split.validation, split.test)
        ),
        split.train_dates,
        split.validation_date,
        split.test_date,
    )
    after = join_history(_frames(wild), history_tables(wild, W3), W3)
    dates = rows["date"].astype("int64").to_numpy()
    upto = dates <= day
    pd.testing.assert_frame_equal(before[upto], after[upto])
    assert (before[~upto] != after[~upto]).any(axis=None)


@pytest.mark.slow
def test_windowed_history_equals_a_brute_force_recomputation(split: Split) -> None:
    rows = _frames(split)
    joined = join_history(rows, history_tables(split, W3), W3)
    seen = pd.concat([split.train, split.validation], ignore_index=True)
    seen_dates = seen["date"].astype("int64")
    all_days = sorted(seen_dates.unique().tolist())
    rng = np.random.default_rng(1)
    dates = rows["date"].astype("int64").to_numpy()
    sample = np.concatenate(
        [rng.choice(np.flatnonzero(dates == d), 3, replace=False) for d in np.unique(dates)]
    )
    k = PRIOR_VIEWS
    for i in sample:
        row = rows.iloc[i]
        window = [d for d in all_days if d < int(row["date"])][-3:]
        views = seen[seen_dates.isin(window)]
        for field in HISTORY_FIELDS:
            mine = views[views[field].astype("int64") == int(row[field])]
            y, g = mine[LABEL].astype(float), views[LABEL].astype(float)
            n = len(y)
            count = float(joined.iloc[i][feature_name(field, "count")])
            assert count == pytest.approx(n / max(len(window), 1)), (i, field)
            mean = float(joined.iloc[i][feature_name(field, "mean_watch_s")])
            if not window:
                assert math.isnan(mean)
                continue
            want = (y.sum() + k * g.mean()) / (n + k)
            assert mean == pytest.approx(want, rel=2e-6), (i, field)
            skip = float(joined.iloc[i][feature_name(field, "skip_share")])
            want_skip = ((y <= 3.0).sum() + k * (g <= 3.0).mean()) / (n + k)
            assert skip == pytest.approx(want_skip, rel=2e-6, abs=1e-7), (i, field)


@pytest.mark.slow
def test_rates_only_drop_the_count_and_keep_the_unseen_flag(split: Split) -> None:
    options = HistoryOptions(counts="none")
    by_day = history_tables(split, options)
    specs = fit_history_features(split.train, by_day, by_day[split.test_date], options)
    names = {s.name for s in specs}
    assert not any(n.endswith("__hist_count") for n in names)
    flagged = [s for s in specs if s.unseen_indicator]
    assert [s.statistic for s in flagged] == ["mean_watch_s"] * len(HISTORY_FIELDS)
