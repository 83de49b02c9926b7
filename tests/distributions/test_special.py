"""The numpy special functions against scipy.special over the whole real line."""

import numpy as np
import pytest
import scipy.special as sp

from service.distributions import special

X = np.concatenate([np.linspace(-40, 40, 40001), [-1e6, -1e3, 0.0, 1e3, 1e8, 1e300]])


def test_erfcx_matches_scipy_relative() -> None:
    x = X[X > -26]
    np.testing.assert_allclose(special.erfcx(x), sp.erfcx(x), rtol=2e-15, atol=0)


def test_erfcx_overflows_to_inf_not_nan_far_left() -> None:
    out = special.erfcx(np.array([-30.0, -1e6]))
    assert np.all(np.isinf(out)) and np.all(out > 0)


def test_ndtr_absolute_and_tail_relative() -> None:
    np.testing.assert_allclose(special.ndtr(X), sp.ndtr(X), rtol=0, atol=3e-16)
    lower = X[(X < -1) & (X > -37)]
    np.testing.assert_allclose(special.ndtr(lower), sp.ndtr(lower), rtol=5e-13)


def test_norm_sf_is_the_mirror() -> None:
    np.testing.assert_allclose(special.norm_sf(X), sp.ndtr(-X), rtol=5e-13, atol=1e-300)


def test_log_ndtr_deep_tail() -> None:
    x = np.array([-1e4, -500.0, -40.0, -5.0, 0.0, 5.0, 40.0])
    np.testing.assert_allclose(special.log_ndtr(x), sp.log_ndtr(x), rtol=1e-14, atol=1e-300)


def test_mills_ratio_both_sides() -> None:
    a = np.array([-50.0, -5.0, 0.0, 3.0, 30.0])
    # phi(a) / Q(a) computed in log space by scipy, independently of erfcx
    ref = np.exp(-0.5 * a * a - 0.5 * np.log(2 * np.pi) - sp.log_ndtr(-a))
    np.testing.assert_allclose(special.mills_ratio(a), ref, rtol=1e-12)
    # far right, where exp of a huge exponent loses digits: the asymptotic series
    big = 1e4
    assert special.mills_ratio(np.array([big]))[0] == pytest.approx(
        big + 1 / big - 2 / big**3, rel=1e-15
    )


def test_erfc_keeps_relative_accuracy() -> None:
    x = np.array([-3.0, -0.1, 0.0, 0.3, 2.0, 10.0, 26.0])
    np.testing.assert_allclose(special.erfc(x), sp.erfc(x), rtol=2e-15)


@pytest.mark.parametrize(
    "p",
    [
        np.logspace(-300, -1, 300),
        np.linspace(0.01, 0.99, 999),
        1.0 - np.logspace(-15, -1, 100),
    ],
)
def test_ndtri_inverts(p: np.ndarray) -> None:
    np.testing.assert_allclose(special.ndtri(p), sp.ndtri(p), rtol=1e-14, atol=1e-15)


def test_ndtri_edges() -> None:
    out = special.ndtri(np.array([0.0, 1.0, -0.1, 1.1, np.nan]))
    assert out[0] == -np.inf and out[1] == np.inf
    assert np.isnan(out[2:]).all()


def test_float32_erfcx_matches_scipy_to_float32_precision() -> None:
    y = np.concatenate([np.linspace(0, 40, 4001), [1e3, 1e8, 1e30]]).astype(np.float32)
    out = special.erfcx_nonneg_f32(y)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, sp.erfcx(y.astype(np.float64)), rtol=5e-7, atol=0)
