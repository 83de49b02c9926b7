"""Properties every registered family must have, over random valid parameters.

The strategies draw parameters per family (moderate ranges, so each example is
cheap) and every property runs over every name in FAMILIES, so a family added to the
registry without a strategy here fails loudly instead of going untested.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from service.distributions import FAMILIES, Distribution, get_family

Arr = npt.NDArray[np.float64]
Params = dict[str, Arr]
Draw = Callable[[st.SearchStrategy[float]], float]

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Float rounding allowance for the identities below.
TOL = 1e-9


def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def vec(draw: st.DrawFn, shape: tuple[int, ...], lo: float, hi: float) -> Arr:
    size = int(np.prod(shape))
    values = draw(st.lists(floats(lo, hi), min_size=size, max_size=size))
    return np.array(values, dtype=np.float64).reshape(shape)


def increasing(draw: st.DrawFn, shape: tuple[int, ...], lo: float, hi: float) -> Arr:
    """Strictly increasing positive values along the last axis (cumulated gaps)."""
    return np.cumsum(vec(draw, shape, lo, hi), axis=-1)


def with_some_mass(p: Arr) -> Arr:
    """Rows of non-negative weights with at least one positive entry per row."""
    p = p.copy()
    p[p.sum(axis=1) <= 0, 0] = 1.0
    return p


@st.composite
def egm_params(draw: st.DrawFn, n: int) -> Params:
    k = draw(st.integers(1, 3))
    w = with_some_mass(vec(draw, (n, k + 1), 0.0, 1.0))
    p0 = vec(draw, (n,), 0.0, 0.5) if draw(st.booleans()) else np.zeros(n)
    w = w / w.sum(axis=1, keepdims=True) * (1.0 - p0)[:, None]
    out = {
        "lambda": vec(draw, (n,), 0.01, 2.0),
        "weights": w,
        "mu": vec(draw, (n, k), -10.0, 60.0),
        "sigma": vec(draw, (n, k), 0.5, 30.0),
    }
    if p0.any():
        out["p0"] = p0
    return out


@st.composite
def normal_params(draw: st.DrawFn, n: int) -> Params:
    return {"loc": vec(draw, (n,), -20.0, 50.0), "scale": vec(draw, (n,), 0.05, 30.0)}


@st.composite
def exponential_params(draw: st.DrawFn, n: int) -> Params:
    return {"rate": vec(draw, (n,), 1e-3, 10.0)}


@st.composite
def ziln_params(draw: st.DrawFn, n: int) -> Params:
    return {
        "p0": vec(draw, (n,), 0.0, 0.9),
        "mu": vec(draw, (n,), -3.0, 4.0),
        "sigma": vec(draw, (n,), 0.1, 2.0),
    }


@st.composite
def histogram_params(draw: st.DrawFn, n: int) -> Params:
    b = draw(st.integers(1, 6))
    probs = with_some_mass(vec(draw, (n, b), 0.0, 1.0))
    shape = (b,) if draw(st.booleans()) else (n, b)
    gaps = increasing(draw, shape, 0.1, 20.0)
    edges = np.concatenate([np.zeros((*shape[:-1], 1)), gaps], axis=-1)
    return {"probs": probs, "edges": edges}


@st.composite
def survival_params(draw: st.DrawFn, n: int) -> Params:
    m = draw(st.integers(1, 5))
    shape = (m,) if draw(st.booleans()) else (n, m)
    # sf is drawn in no order on purpose: the family makes it monotone by its own rule.
    return {"thresholds": increasing(draw, shape, 0.1, 20.0), "sf": vec(draw, (n, m), 0.0, 1.0)}


@st.composite
def quantile_params(draw: st.DrawFn, n: int) -> Params:
    k = draw(st.integers(1, 5))
    shape = (k,) if draw(st.booleans()) else (n, k)
    # Levels: cumulated positive gaps scaled into (0, 1), the last gap left above 1.
    gaps = vec(draw, (*shape[:-1], k + 1), 0.05, 1.0)
    levels = np.cumsum(gaps, axis=-1)[..., :k] / gaps.sum(axis=-1, keepdims=True)
    # Values: cumulated positive gaps, the first few possibly 0 (an atom at 0). Equal values
    # above 0 (atoms there, where cdf(icdf(q)) > q) are tested in test_families.
    values = np.cumsum(vec(draw, (n, k), 1e-3, 20.0), axis=1)
    values[:, : draw(st.integers(0, k - 1))] = 0.0
    out = {"levels": levels, "values": values}
    if draw(st.booleans()):
        out["point"] = vec(draw, (n,), 0.0, 50.0)
    return out


STRATEGIES: dict[str, Callable[[int], st.SearchStrategy[Params]]] = {
    "egm": egm_params,
    "normal": normal_params,
    "exponential": exponential_params,
    "ziln": ziln_params,
    "histogram": histogram_params,
    "survival": survival_params,
    "quantile": quantile_params,
}


@st.composite
def distributions(draw: st.DrawFn, family: str) -> Distribution:
    n = draw(st.integers(1, 4))
    params = draw(STRATEGIES[family](n))
    note(f"{family} params: { ({k: v.tolist() for k, v in params.items()})!r}")
    return get_family(family).from_params(params)


def test_every_family_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(FAMILIES)


family_names = pytest.mark.parametrize("family", sorted(FAMILIES))


@family_names
@EXAMPLES
@given(data=st.data())
def test_cdf_monotone_in_t(family: str, data: st.DataObject) -> None:
    d = data.draw(distributions(family))
    t = np.sort(np.array(data.draw(st.lists(floats(0.0, 200.0), min_size=2, max_size=12))))
    t = np.concatenate([[-1.0, 0.0], t, [1e6, np.inf]])
    c = d.cdf(t)
    assert ((c >= 0) & (c <= 1)).all()
    assert (np.diff(c, axis=1) >= 0).all()
    assert (c[:, 0] == 0).all() and (c[:, -1] == 1).all()
    np.testing.assert_allclose(c[:, 1], d.atom(), rtol=1e-12, atol=1e-15)


@family_names
@EXAMPLES
@given(data=st.data())
def test_icdf_monotone_and_inverts_cdf(family: str, data: st.DataObject) -> None:
    d = data.draw(distributions(family))
    drawn = data.draw(st.lists(floats(0.0, 1.0), min_size=1, max_size=10))
    q = np.sort(np.array([0.0, 1 - 1e-9, 1.0, *drawn]))
    x = d.icdf(q)
    assert (x >= 0).all() and np.isfinite(x[:, q < 1]).all()
    atom = d.atom()[:, None]
    assert (x[q <= atom] == 0).all()
    continuous = q > atom + TOL
    closed_form = type(d)._icdf is not Distribution._icdf
    # Root-found quantiles are each exact to the stated tolerance (1e-4 s or 1e-6
    # relative), so two of them may cross by that much where the CDF is flat to double
    # precision (levels below 1e-16 under a mode far from 0); closed forms may not.
    prev = x[:, :-1]
    slack = np.where(closed_form | ~np.isfinite(prev), 0.0, np.maximum(1e-4, 1e-6 * prev))
    assert (x[:, 1:] >= prev - slack).all()
    if closed_form:
        # Closed-form quantiles: never below the level, equal to it off the atom.
        back = d.cdf(x)
        assert (back >= q - TOL).all()
        assert (np.abs(back - q)[continuous] <= TOL).all()
    else:
        # Root-found quantiles: the exact one lies within the stated tolerance of x
        # (1e-4 s absolute or 1e-6 relative), i.e. q is bracketed by the CDF there.
        step = np.where(np.isfinite(x), np.maximum(1e-4, 1e-6 * x), 0.0)
        lower = d.cdf(np.maximum(x - step, 0.0))
        upper = d.cdf(x + step)
        ok = (lower <= q + TOL) & (q <= upper + TOL)
        assert ok[continuous].all()


@family_names
@EXAMPLES
@given(data=st.data())
def test_interval_masses_over_a_partition_sum_to_one(family: str, data: st.DataObject) -> None:
    d = data.draw(distributions(family))
    a = data.draw(floats(1e-9, 100.0))  # an interval starting at 0 holds the atom
    b = a + data.draw(floats(0.0, 100.0))
    masses = d.interval_mass(np.array([[0.0, a], [a, b], [b, np.inf]]))
    assert ((masses >= 0) & (masses <= 1)).all()
    np.testing.assert_allclose(masses.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # Per-row edges give the same masses as the same edges shared.
    per_row = np.broadcast_to(np.array([[0.0, a], [a, b], [b, np.inf]]), (d.n, 3, 2))
    np.testing.assert_allclose(d.interval_mass(per_row), masses, rtol=0, atol=1e-15)


def test_interval_mass_per_row_edges_for_a_single_row() -> None:
    d = get_family("exponential").from_params({"rate": np.array([1.0])})
    edges = np.array([[[0.0, 1.0], [1.0, 2.0], [2.0, np.inf]]])
    np.testing.assert_allclose(d.interval_mass(edges), d.interval_mass(edges[0]))


@family_names
@EXAMPLES
@given(data=st.data())
def test_quick_skip_is_the_cdf(family: str, data: st.DataObject) -> None:
    d = data.draw(distributions(family))
    tau = data.draw(floats(0.0, 100.0))
    assert (d.quick_skip_prob(tau) == d.cdf(tau)).all()
    per_row = np.array(data.draw(st.lists(floats(0.0, 100.0), min_size=d.n, max_size=d.n)))
    assert (d.quick_skip_prob(per_row) == d.cdf(per_row[:, None])[:, 0]).all()


@family_names
@EXAMPLES
@given(data=st.data())
def test_moments_finite_and_non_negative(family: str, data: st.DataObject) -> None:
    d = data.draw(distributions(family))
    for value in (d.mean(), d.stddev(), d.variance()):
        assert value.shape == (d.n,)
        assert np.isfinite(value).all() and (value >= 0).all()
    # The point is the model's own number: finite, but EGM's may fall below 0.
    assert d.point().shape == (d.n,) and np.isfinite(d.point()).all()
    np.testing.assert_allclose(d.stddev() ** 2, d.variance(), rtol=1e-12, atol=1e-300)
