"""Curves (service.distributions.curve) against each family's own CDF and density.

The rules the curve states, checked for every family with shared and per-row grids, with and
without atoms: the CDF on the grid is the family's ``cdf``; the atoms are the family's point
masses; a "step" density integrates by rectangles to the CDF's increments less the atoms in
each cell, and equals the family's density wherever that is constant across a cell; a "point"
density is the family's density at the grid, and the trapezoid rule over a fine grid gives
the CDF's increments.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.distributions import Distribution, Quantile, get_family
from service.distributions.curve import Curve, curve, grid
from tests.distributions.test_distribution_take import CASES

STEP_FAMILIES = {"histogram", "survival", "quantile"}


def build(case: str) -> Distribution:
    family, params = CASES[case]
    return get_family(family).from_params(params)


def atoms_in_cells(c: Curve) -> np.ndarray:
    """Atom mass in each cell (t_i, t_{i+1}], (n, P-1), by a plain comparison."""
    lo, hi = c.t[:-1], c.t[1:]
    inside = (c.atom_at[:, :, None] > lo) & (c.atom_at[:, :, None] <= hi)
    return (c.atom_mass[:, :, None] * inside).sum(axis=1)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("points,max_s", [(2, 1.0), (201, 60.0), (37, 400.0)])
def test_cdf_is_the_familys_cdf_and_atoms_its_point_masses(
    case: str, points: int, max_s: float
) -> None:
    dist = build(case)
    t = grid(points, max_s)
    c = curve(dist, t)
    assert c.pdf.shape == c.cdf.shape == (dist.n, points)
    np.testing.assert_array_equal(c.t, t)
    np.testing.assert_allclose(c.cdf, dist.cdf(t), rtol=0, atol=1e-15)
    assert (np.diff(c.cdf, axis=1) >= 0).all()
    assert (c.pdf >= 0).all() and np.isfinite(c.pdf).all()
    # The atoms at 0 are the family's atom, and the CDF at 0 holds exactly them.
    at_zero = np.where(c.atom_at == 0.0, c.atom_mass, 0.0).sum(axis=1)
    np.testing.assert_allclose(at_zero, dist.atom(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(c.cdf[:, 0], dist.atom(), rtol=0, atol=1e-12)
    assert c.density == ("step" if CASES[case][0] in STEP_FAMILIES else "point")


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][0] in STEP_FAMILIES))
@pytest.mark.parametrize("points,max_s", [(2, 5.0), (201, 60.0), (1000, 120.0)])
def test_step_density_integrates_to_the_cdf_increments(
    case: str, points: int, max_s: float
) -> None:
    dist = build(case)
    c = curve(dist, grid(points, max_s))
    widths = np.diff(c.t)
    rectangles = c.pdf[:, :-1] * widths + atoms_in_cells(c)
    np.testing.assert_allclose(rectangles, np.diff(c.cdf, axis=1), rtol=1e-9, atol=1e-13)
    # Inside a bucket (the family's density the same at both ends and the middle of a cell)
    # the step is that density itself.
    _, left = dist.cdf_pdf(c.t[None, :-1])
    _, mid = dist.cdf_pdf((c.t[None, :-1] + c.t[None, 1:]) / 2)
    _, right = dist.cdf_pdf(c.t[None, 1:] - widths * 1e-9)
    left, mid, right = (np.broadcast_to(a, rectangles.shape) for a in (left, mid, right))
    flat = np.isclose(left, right, rtol=1e-12, atol=0) & np.isclose(left, mid, rtol=1e-12, atol=0)
    flat &= atoms_in_cells(c) == 0
    assert flat.sum() > 0 or points == 2
    np.testing.assert_allclose(c.pdf[:, :-1][flat], left[flat], rtol=1e-7, atol=1e-12)
    # The last value is the density just right of the last grid point.
    _, last = dist.cdf_pdf(c.t[None, -1:])
    np.testing.assert_allclose(c.pdf[:, -1], np.broadcast_to(last, (dist.n, 1))[:, 0])


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][0] not in STEP_FAMILIES))
def test_point_density_is_the_familys_and_the_trapezoid_rule_gives_the_cdf(case: str) -> None:
    dist = build(case)
    t = grid(2000, 30.0)
    c = curve(dist, t)
    _, pdf = dist.cdf_pdf(t[None, :])
    np.testing.assert_allclose(c.pdf, np.broadcast_to(pdf, c.pdf.shape), rtol=1e-15, atol=0)
    # log_prob is the same density (away from 0, where it is the atom's mass instead)
    np.testing.assert_allclose(c.pdf[:, 1:], np.exp(dist.log_prob(t[1:])), rtol=1e-9, atol=1e-300)
    # Trapezoids give the CDF's increments to the rule's own error wherever the grid resolves
    # the row: no cell holding more than 0.5 % of the mass. The cases hold components far
    # narrower than any grid (sigma of 0.1 s, a lognormal spike next to 0), so the rows are
    # sorted by that, on a grid of 1.5 ms.
    t = grid(20_000, 30.0)
    c = curve(dist, t)
    trapezoids = np.cumsum((c.pdf[:, 1:] + c.pdf[:, :-1]) / 2 * (t[1] - t[0]), axis=1)
    err = np.abs(trapezoids - (c.cdf[:, 1:] - c.cdf[:, :1])).max(axis=1)
    resolved = np.diff(c.cdf, axis=1).max(axis=1) < 0.005
    assert resolved.mean() >= 0.6, resolved.mean()
    assert err[resolved].max() < 2e-3, np.sort(err[resolved])[-5:]
    assert np.median(err) < 1e-4


def test_atoms_above_zero_come_out_of_the_step_density() -> None:
    # Knots 0, 2, 2, 5, 9: an atom of 0.25 at 2 s (levels 0.25 -> 0.5 both at 2 s).
    dist = Quantile(levels=np.array([0.25, 0.5, 0.75, 0.9]), values=np.array([[2, 2, 5, 9.0]]))
    c = curve(dist, grid(11, 10.0))  # cells of 1 s: the atom sits on the edge t = 2
    held = atoms_in_cells(c)
    assert held[0, 1] == pytest.approx(0.25)  # in (1, 2]
    # Segment [0, 2] holds 0.25 over 2 s; [2, 5] 0.25 over 3 s; [5, 9] 0.15 over 4 s.
    np.testing.assert_allclose(c.pdf[0, :9], [0.125] * 2 + [0.25 / 3] * 3 + [0.0375] * 4)
    np.testing.assert_allclose(c.cdf[0, 2], 0.5)  # right-continuous: the atom included
    # On a grid that puts the atom inside a cell, the cell's density is still continuous only.
    c = curve(dist, np.array([0.0, 1.5, 2.5, 4.0]))
    np.testing.assert_allclose(c.pdf[0, 1], (0.125 * 0.5 + 0.25 / 3 * 0.5) / 1.0)


def test_rows_concat_and_take_agree_with_the_whole() -> None:
    dist = build("egm")
    t = grid(50, 40.0)
    whole = curve(dist, t)
    parts = [curve(dist.take(np.arange(a, b)), t) for a, b in ((0, 7), (7, 8), (8, dist.n))]
    joined = Curve.concat(parts)
    for name in ("pdf", "cdf", "atom_at", "atom_mass"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name))
        np.testing.assert_array_equal(getattr(whole.rows(7, 8), name), getattr(parts[1], name))


def test_no_rows_and_bad_grids() -> None:
    dist = build("histogram-shared").take(np.empty(0, dtype=np.intp))
    c = curve(dist, grid(5, 10.0))
    assert c.pdf.shape == c.cdf.shape == (0, 5)
    for bad in (
        np.array([0.0]),
        np.array([0.0, np.nan]),
        np.array([1.0, 1.0]),
        np.array([-1, 2.0]),
    ):
        with pytest.raises(ValueError):
            curve(build("egm"), bad)
