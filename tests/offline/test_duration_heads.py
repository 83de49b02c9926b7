"""The duration-aware heads (d2co, ...): their fits and corrections against references
derived by hand or by simulation, and the duration they read inside the graph."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from model_export.data.features import fit_features
from model_export.data.kuairand import load_joined, split_by_day
from model_export.data.prepared import encode
from model_export.models.d2co import D2Co, gmm2, weighted_moving_average
from model_export.models.duration import DurationInput, duration_cuts, group_of_ms
from model_export.training.baselines import build_model
from model_export.training.config import BaselineConfig

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
