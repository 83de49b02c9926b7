"""ONNX export: parity with torch, the serving path on real rows, and the shipped model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model_export.data import labels, load_joined, raw_columns, split_by_day
from model_export.data.features import fit_features
from model_export.data.prepared import encode, training_window
from model_export.evaluation.metrics import evaluate_distribution
from model_export.evaluation.served import load_served, served_distribution, served_params
from model_export.export.model_dir import write_model_dir
from model_export.models.egmn import EGMN, Calibration, ServingEGMN
from service.distributions import EGM
from tests.support import ROOT

SHIPPED = ROOT / "models" / "egmn" / "1"


@pytest.fixture(scope="module")
def split() -> Iterator[object]:
    yield split_by_day(load_joined())


def _serving(fitted_cards: list[int], width: int, point_mass: bool) -> ServingEGMN:
    """An untrained EGMN with a non-trivial calibration: parity must hold for any weights."""
    torch.manual_seed(3)
    model = EGMN(fitted_cards, width, hidden=(32, 16), point_mass=point_mass)
    with torch.no_grad():  # BatchNorm statistics away from their defaults
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    n_weights = 11 + int(point_mass)
    cal = Calibration(10, n_weights)
    with torch.no_grad():
        cal.log_lambda_scale.fill_(0.2)
        cal.log_sigma_scale.uniform_(-0.3, 0.3)
        cal.log_temperature.fill_(-0.1)
        cal.weight_bias.uniform_(-0.5, 0.5)
    return ServingEGMN(model, cal, 10.0).eval()


@pytest.mark.slow
@pytest.mark.parametrize("point_mass", [True, False])
def test_onnxruntime_matches_torch(split: object, tmp_path: Path, point_mass: bool) -> None:
    train: pd.DataFrame = split.train.iloc[:30_000]  # type: ignore[attr-defined]
    rows: pd.DataFrame = split.test.iloc[:3_000]  # type: ignore[attr-defined]
    fitted = fit_features(train)
    serving = _serving(fitted.cardinalities, fitted.numeric_width, point_mass)
    model_dir = tmp_path / "parity" / "1"
    write_model_dir(
        model_dir,
        serving,
        fitted,
        name="parity",
        version="1",
        window=training_window(split),  # type: ignore[arg-type]
        evaluation=None,
        extras={},
    )
    exported = load_served(model_dir)
    with torch.no_grad():
        enc = encode(fitted, rows)
        reference = dict(
            zip(serving.output_names(), serving(enc.categorical, enc.numeric), strict=True)
        )
    for n in (1, 7, len(rows)):  # dynamic batch dimension
        got = served_params(
            exported, raw_columns(rows.iloc[:n], exported.manifest.source_columns())
        )
        assert set(got) == set(reference)
        for name, value in got.items():
            want = reference[name][:n].double().numpy()
            assert value.shape == want.shape
            rel = np.max(np.abs(value - want) / np.maximum(np.abs(want), 1e-30))
            assert rel < 1e-5, f"{name}: relative difference {rel:.2e}"
    ort_params = served_params(exported, raw_columns(rows, exported.manifest.source_columns()))
    d_ort = EGM.from_params(ort_params)
    d_torch = EGM.from_params({k: v.double().numpy() for k, v in reference.items()})
    levels = np.array([0.1, 0.5, 0.9])
    grid = np.array([0.0, 1.0, 3.0, 10.0, 60.0])
    pairs = [
        (d_ort.mean(), d_torch.mean()),
        (d_ort.point(), d_torch.point()),
        (d_ort.stddev(), d_torch.stddev()),
        (d_ort.cdf(grid), d_torch.cdf(grid)),
        (d_ort.quick_skip_prob(3.0), d_torch.quick_skip_prob(3.0)),
    ]
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    # A quantile where the CDF is nearly flat (just above the atom) moves far for a 1e-7
    # change of p0, so quantiles are compared where it matters, in probability.
    # At the atom (quantile 0) the CDF jumps past the level: there F(0) >= level is the rule.
    q_ort = d_ort.icdf(levels)
    f = d_torch.cdf(q_ort)
    want = np.broadcast_to(levels, q_ort.shape)
    inside = q_ort > 0
    np.testing.assert_allclose(f[inside], want[inside], atol=1e-5)
    assert np.all(f[~inside] >= want[~inside] - 1e-5)


def test_unknown_and_missing_values_are_served(split: object) -> None:
    model = load_served(SHIPPED)
    rows: pd.DataFrame = split.test.iloc[:64]  # type: ignore[attr-defined]
    cols = raw_columns(rows, model.manifest.source_columns())
    cols["user_id"] = np.full(64, 10**9)  # never seen
    cols["tag"] = np.array([None] * 64, dtype=object)
    cols["duration_ms"] = np.zeros(64)  # unknown duration
    dist = served_distribution(model, cols)
    assert np.all(np.isfinite(dist.mean())) and np.all(dist.mean() > 0)
    np.testing.assert_allclose(dist.interval_mass(np.array([[0, 3], [3, np.inf]])).sum(1), 1.0)


@pytest.mark.slow
def test_shipped_model_reproduces_its_manifest_and_meets_the_bar(split: object) -> None:
    model = load_served(SHIPPED)
    manifest = model.manifest
    assert manifest.evaluation is not None
    test: pd.DataFrame = split.test  # type: ignore[attr-defined]
    assert manifest.training_window.test_date == int(test["date"].iloc[0])
    y = labels(test)
    got = evaluate_distribution(
        served_distribution(model, raw_columns(test, manifest.source_columns())), y
    )
    for key, value in manifest.evaluation.metrics.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-4), key
    base = manifest.evaluation.references["per_video_median"]
    assert got["mae_point"] < base["mae_point"]
    assert got["xauc_point"] >= base["xauc_point"] + 0.04
    for level in (0.1, 0.5, 0.9):
        assert abs(got[f"coverage_{level:g}"] - level) <= 0.03


def test_json_like_columns_encode_like_the_training_path(split: object) -> None:
    """Rows as a client sends them (lists with null) give the tensors training used."""
    from service.runtime.features import encode_features

    model = load_served(SHIPPED)
    rows: pd.DataFrame = split.test.iloc[:500]  # type: ignore[attr-defined]
    sources = model.manifest.source_columns()
    training_path = encode_features(model.manifest, raw_columns(rows, sources))
    as_json = {
        name: np.array(
            [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in rows[name]],
            dtype=object,
        )
        for name in sources
    }
    serving_path = encode_features(model.manifest, as_json)
    for name, tensor in training_path.items():
        np.testing.assert_array_equal(serving_path[name], tensor)
    assert (training_path["categorical"] == 0).any()  # some missing values were exercised
