"""Vectorized, bracketed quantile search for families without a closed-form inverse.

Every (row, level) pair is an independent root of ``F(t) - q``; they are solved all at
once with safeguarded Newton steps in ``u = log t``. Watch times spread over orders of
magnitude (0.1 s skips to 100 s replays), and in log time the CDF is close to linear
over that range, so Newton converges in a few steps from a crude start, while the
bracket (kept for every pair) turns any step that leaves it into a bisection, which
keeps flat stretches between mixture modes safe.

The start decides the cost, since every further step is one more pass over all K
components: a per-row log grid (denser near its top, where levels usually fall), evaluated
in float32, gives each level a bracket and, from the CDF and density at the cell's ends, a
cubic Hermite start; a few float32 steps (Halley's where the family gives the density's
derivative, else Newton's; a float32 pass costs well under half a float64 one) then bring
the start to about 1e-6, where the float64 search below usually stops after one evaluation.
Pairs still far off after those steps (levels inside a narrow, heavy peak of a mixture, such
as the full views' peak of a duration-anchored EGMN, where the steps bounce across it) take
a few more on their own rows: float32 steps on a handful of rows cost far less than the
float64 iterations they save. Only float64 values decide brackets and stopping.

Stated tolerance: a pair stops once its bracket is narrower than ``XTOL_ABS + XTOL_REL
* t`` (1e-9 s and 1e-9 relative), or its last step was a Newton step no larger than
that or than ``NEWTON_STOP`` (1e-5) relative (a small regula falsi or bisection step
says nothing: near 0 in log time every step is small in seconds). Newton converges
quadratically, so the error left after such a step is of order 1e-10 relative times the
CDF's curvature in log time; on the shipped EGMN's test-day rows (1,595 pairs, levels
0.01 to 0.99) the worst error against brentq at 1e-15 was 7e-11 relative. The tests hold
every family to 1e-4 s / 1e-6 relative against brentq. Levels whose quantile lies below
``X_FLOOR`` are resolved by linear interpolation from the atom, which is exact to well
within the tolerance.
"""

from __future__ import annotations

from typing import Protocol, Self

import numpy as np

from service.distributions.arrays import Float32Array, FloatArray, IntArray

XTOL_ABS = 1e-9
XTOL_REL = 1e-9
NEWTON_STOP = 1e-5
X_FLOOR = 1e-12
MAX_ITER = 100
MAX_DOUBLINGS = 200
# The bracketing grid: GRID_POINTS log-spaced points spanning GRID_SPAN below the top.
GRID_POINTS = 8
GRID_SPAN = 1e6
GRID_POWER = 2.0
# Safeguarded Newton steps on the cubic model of a grid cell (cheap: no components).
CUBIC_STEPS = 6
# Float32 Newton steps before the float64 search, in every call: a pair's answer must not
# depend on how many pairs share the call (a batch's rows are answered bit for bit as alone).
FLOAT32_STEPS = 4
# The same with Halley's steps, where the family gives the density's derivative.
HALLEY32_STEPS = 3
# Then, for the pairs whose float32 CDF is still this far from their level, up to this many
# more Halley steps on their rows alone.
STRAGGLER32 = 1e-4
STRAGGLER32_STEPS = 4
# Below this, the sign of a float32 CDF minus a level says nothing.
FLOAT32_NOISE = 2e-6
# A level this close to a float32 grid value may lie in the neighbouring cell.
GRID32_MARGIN = 1e-4


class Searchable(Protocol):
    """What the search needs of a batch of ``n`` distributions, and no more.

    The kernels take finite ``t >= 0`` as ``(n, m)`` or ``(1, m)`` and may answer
    ``(1, m)``-broadcast; the float32 ones are called only when the flag above them says
    they exist. ``take`` narrows the batch to some rows (repeats allowed) once few pairs
    are left, so the kernels run on those rows alone.
    """

    @property
    def has_float32_kernel(self) -> bool: ...

    @property
    def has_float32_slope(self) -> bool: ...

    def atom(self) -> FloatArray:
        """P(T == 0) per row."""
        ...

    def upper_guess(self) -> FloatArray:
        """A per-row point expected to lie above the high quantiles."""
        ...

    def cdf_pdf(self, t: FloatArray) -> tuple[FloatArray, FloatArray]: ...

    def cdf_pdf32(self, t: Float32Array) -> tuple[Float32Array, Float32Array]: ...

    def cdf_pdf_dpdf32(
        self, t: Float32Array
    ) -> tuple[Float32Array, Float32Array, Float32Array]: ...

    def take(self, rows: IntArray) -> Self: ...


class _Evaluator:
    """Evaluates CDF and density on a subset of the (row, level) grid.

    While most pairs are still active it is cheaper to evaluate the whole grid with
    the family's own broadcasting than to gather per-pair parameter copies; once
    few remain, the family is narrowed to just their rows.
    """

    def __init__(self, dist: Searchable, n: int, m: int) -> None:
        self.dist, self.n, self.m = dist, n, m
        self.rows_of = np.repeat(np.arange(n), m)

    def __call__(self, x: FloatArray, idx: IntArray) -> tuple[FloatArray, FloatArray]:
        size = self.n * self.m
        if 2 * idx.size >= size:
            grid = np.ones(size)
            grid[idx] = x
            f_cdf, f_pdf = self.dist.cdf_pdf(grid.reshape(self.n, self.m))
            f_cdf = np.broadcast_to(f_cdf, (self.n, self.m)).ravel()[idx]
            f_pdf = np.broadcast_to(f_pdf, (self.n, self.m)).ravel()[idx]
            return f_cdf, f_pdf
        sub = self.dist.take(self.rows_of[idx])
        f_cdf, f_pdf = sub.cdf_pdf(x[:, None])
        return f_cdf[:, 0], f_pdf[:, 0]


def _cubic_start(
    target: FloatArray, rise: FloatArray, d_lo: FloatArray, d_hi: FloatArray, width: FloatArray
) -> FloatArray:
    """Where, as a fraction ``s`` of its cell, the CDF is expected to reach each level.

    A grid cell spans a factor of about seven in time, so a straight line through its
    ends (regula falsi) starts Newton far enough out to cost several full evaluations
    of the mixture. The grid already gives the slopes at both ends, so the cubic
    Hermite interpolant of the CDF in log time is free, and solving it costs a few
    passes over one value per level instead of one per level and component. It is
    only a start: the bracketed search that follows owns correctness, so where the
    slopes are unknown (the first cell) or useless this falls back to the line.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        line = target / rise
        c1 = d_lo * width
        c3 = c1 + d_hi * width - 2.0 * rise
        c2 = rise - c1 - c3
        s = np.clip(line, 0.02, 0.98)
        s_lo = np.zeros_like(s)
        s_hi = np.ones_like(s)
        for _ in range(CUBIC_STEPS):
            val = ((c3 * s + c2) * s + c1) * s - target
            low = val < 0
            s_lo = np.where(low, s, s_lo)
            s_hi = np.where(low, s_hi, s)
            slope = (3.0 * c3 * s + 2.0 * c2) * s + c1
            s = s - val / slope
            s = np.where((s > s_lo) & (s < s_hi), s, 0.5 * (s_lo + s_hi))
        return np.where(np.isfinite(s), s, np.clip(np.nan_to_num(line, nan=0.5), 0.02, 0.98))


def _float32_newton(
    dist: Searchable,
    u: FloatArray,
    u_lo: FloatArray,
    u_hi: FloatArray,
    qq: FloatArray,
    idx: IntArray,
    n: int,
    m: int,
) -> FloatArray:
    """Sharpen the start with a few unguarded Newton steps on the family's float32 kernel.

    Float32 halves the bytes per pass and doubles the SIMD width, and the family may use
    a shorter erfc approximation there, so a step costs well under half of a float64
    one; float32 resolves a quantile to about 1e-6 relative, which is where the float64
    search's stopping rule starts to accept a Newton step. Nothing here is trusted: a
    step that leaves the float64 bracket or is not finite is dropped, and the
    bracketed float64 search that follows starts from whatever this returns, so a
    level float32 cannot represent (1 - 1e-9 rounds to 1) only costs that search its
    usual iterations.
    """
    size = n * m
    # Float32's own bracket: a Newton step that would leave it bisects instead, so one bad
    # step does not leave a pair where it was for every step after.
    lo, hi = u_lo, u_hi
    halley = dist.has_float32_slope
    g = np.zeros_like(qq)
    for _ in range(HALLEY32_STEPS if halley else FLOAT32_STEPS):
        x = np.exp(u)
        grid = np.ones(size, dtype=np.float32)
        grid[idx] = x
        if halley:
            f_cdf, f_pdf, f_dpdf = dist.cdf_pdf_dpdf32(grid.reshape(n, m))
            dpdf = f_dpdf.ravel()[idx]
        else:
            f_cdf, f_pdf = dist.cdf_pdf32(grid.reshape(n, m))
            dpdf = None
        g = f_cdf.ravel()[idx] - qq
        u, lo, hi = _step32(u, lo, hi, g, f_pdf.ravel()[idx] * x, x, dpdf)
    if not halley:
        return u
    # Pairs still far off (a level inside a narrow peak of the mixture, where the steps
    # above bounce across it) take a few more steps on their own rows; each pair's path
    # depends on nothing but itself, so its answer does not depend on its batch-mates.
    lo, hi = lo.copy(), hi.copy()  # the caller's bracket stays as it was
    for _ in range(STRAGGLER32_STEPS):
        far = np.flatnonzero(np.abs(g) > STRAGGLER32)
        if far.size == 0:
            break
        x = np.exp(u[far])
        sub = dist.take(idx[far] // m)
        f_cdf, f_pdf, f_dpdf = sub.cdf_pdf_dpdf32(x.astype(np.float32)[:, None])
        g_far = f_cdf[:, 0] - qq[far]
        u_far, lo_far, hi_far = _step32(
            u[far], lo[far], hi[far], g_far, f_pdf[:, 0] * x, x, f_dpdf[:, 0]
        )
        u[far], lo[far], hi[far], g[far] = u_far, lo_far, hi_far, g_far
    return u


def _step32(
    u: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    g: FloatArray | Float32Array,
    slope: FloatArray | Float32Array,
    x: FloatArray,
    dpdf: FloatArray | Float32Array | None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One float32-guided step in log time: the bracket moved by the signs float32 can
    vouch for, then Halley's step (Newton's without the density's slope), or a bisection
    where the step leaves the bracket."""
    # Only a sign float32 can vouch for moves a bracket end.
    lo = np.where(g < -FLOAT32_NOISE, u, lo)
    hi = np.where(g > FLOAT32_NOISE, u, hi)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        step = u - g / slope
        if dpdf is not None:
            # In log time: G' = t f(t), G'' = t f(t) + t**2 f'(t); Halley's step is
            # Newton's divided by 1 - G G'' / (2 G'**2), cubic instead of quadratic.
            curve = slope + x * x * dpdf
            damp = 1.0 - g * curve / (2.0 * slope * slope)
            better = u - g / (slope * damp)
            step = np.where(np.isfinite(better) & (damp > 0.5), better, step)
    return np.where((step > lo) & (step < hi), step, 0.5 * (lo + hi)), lo, hi


def solve_quantiles(dist: Searchable, q: FloatArray) -> FloatArray:
    """Quantiles of ``dist`` at levels ``q`` (``(n, m)`` in [0, 1]), as ``(n, m)``.

    Each level is solved on its own, to the stated tolerance of the family's CDF. Where
    that CDF is flat to double precision (levels far below 1e-16 under a mode far from 0)
    any point of the flat stretch solves a level, and two levels of a row could come back
    crossed; a quantile of a lower level is also one of every higher level there, so each
    row's quantiles are made non-decreasing in the level.
    """
    out = _solve(dist, q)
    if q.shape[1] < 2 or not q.size:
        return out
    if (q == q[0]).all():  # levels shared by every row: one order, and a cheap check
        order = np.argsort(q[0], kind="stable")
        ranked = out[:, order]
        if (ranked[:, 1:] < ranked[:, :-1]).any():
            out[:, order] = np.maximum.accumulate(ranked, axis=1)
        return out
    rows_order = np.argsort(q, axis=1, kind="stable")
    ranked = np.take_along_axis(out, rows_order, axis=1)
    np.maximum.accumulate(ranked, axis=1, out=ranked)
    np.put_along_axis(out, rows_order, ranked, axis=1)
    return out


def _solve(dist: Searchable, q: FloatArray) -> FloatArray:
    n, m = q.shape
    out = np.zeros(n * m)
    qf = q.ravel()
    evaluate = _Evaluator(dist, n, m)
    atom = dist.atom()[evaluate.rows_of]
    out[qf >= 1.0] = np.inf
    idx = np.flatnonzero((qf > atom) & (qf < 1.0))
    if idx.size == 0:
        return out.reshape(n, m)
    qq = qf[idx]

    # Bracket every level on a per-row log grid below the family's upper guess. The
    # grid is shared by all of a row's levels, so it costs GRID_POINTS evaluations per
    # row however many levels are asked, and it leaves Newton a start within one cell.
    top = np.maximum(np.minimum(dist.upper_guess(), 1e300), 2.0 * X_FLOOR)
    f_top = dist.cdf_pdf(top[:, None])[0][:, 0]
    for _ in range(MAX_DOUBLINGS):
        short = f_top < qf.reshape(n, m).max(axis=1)
        if not short.any():
            break
        top[short] = np.minimum(top[short] * 8.0, 1e300)
        f_top[short] = dist.take(np.flatnonzero(short)).cdf_pdf(top[short, None])[0][:, 0]
    grid = top[:, None] * GRID_SPAN ** -(np.linspace(1.0, 0.0, GRID_POINTS) ** GRID_POWER)
    grid = np.maximum(grid, X_FLOOR)
    if dist.has_float32_kernel:
        # The grid only places each level in a cell and gives the cubic start, so float32
        # serves; a level within GRID32_MARGIN of a cell end, where float32 might misplace
        # it, gets the neighbouring cell too. Brackets then move on float64 values only.
        f32, p32 = dist.cdf_pdf32(grid.astype(np.float32))
        f_grid = np.broadcast_to(f32, grid.shape).astype(np.float64)
        p_grid = np.broadcast_to(p32, grid.shape).astype(np.float64)
        margin = GRID32_MARGIN
    else:
        f64, p64 = dist.cdf_pdf(grid)
        f_grid = np.broadcast_to(f64, grid.shape).copy()
        p_grid = np.broadcast_to(p64, grid.shape)
        margin = 0.0
    f_grid[:, -1] = f_top  # the top is exact: every level lies at or below it
    rows = evaluate.rows_of[idx]
    cell = (f_grid[rows] < qq[:, None]).sum(axis=1)
    cell = np.minimum(cell, GRID_POINTS - 1)
    upper = cell
    lower = cell - 1
    if margin:
        upper = np.minimum(cell + (f_grid[rows, cell] - qq < margin), GRID_POINTS - 1)
        lower = lower - ((lower >= 0) & (qq - f_grid[rows, np.maximum(lower, 0)] < margin))
    hi = grid[rows, upper]
    f_hi = f_grid[rows, upper]
    first = lower < 0
    below_cell = np.maximum(lower, 0)
    lo = np.where(first, X_FLOOR, grid[rows, below_cell])
    f_lo = np.where(first, np.nan, f_grid[rows, below_cell])
    # CDF slopes in log time at both ends (t * density), for the cubic start below.
    d_lo = np.where(first, np.nan, p_grid[rows, below_cell] * lo)
    d_hi = p_grid[rows, upper] * hi
    if first.any():
        # Below the grid: check the floor, where the CDF is linear from the atom.
        f_floor, _ = evaluate(np.full(int(first.sum()), X_FLOOR), idx[first])
        f_lo[first] = f_floor
        tiny = np.zeros(idx.size, dtype=bool)
        tiny[first] = f_floor >= qq[first]
        if tiny.any():
            a = atom[idx[tiny]]
            f_fl = f_lo[tiny]
            out[idx[tiny]] = X_FLOOR * (qq[tiny] - a) / np.maximum(f_fl - a, 1e-300)
            keep = ~tiny
            idx, qq, lo, hi, f_lo, f_hi, d_lo, d_hi = (
                idx[keep],
                qq[keep],
                lo[keep],
                hi[keep],
                f_lo[keep],
                f_hi[keep],
                d_lo[keep],
                d_hi[keep],
            )
            if idx.size == 0:
                return out.reshape(n, m)

    u_lo = np.log(lo)
    u_hi = np.log(hi)
    u = u_lo + (u_hi - u_lo) * _cubic_start(qq - f_lo, f_hi - f_lo, d_lo, d_hi, u_hi - u_lo)
    if dist.has_float32_kernel:
        u = _float32_newton(dist, u, u_lo, u_hi, qq, idx, n, m)

    # rtsafe's guard: a Newton step that leaves the bracket, or would not at least halve
    # the step before the last one, is replaced. The replacement is regula falsi across
    # the bracket, kept off its ends by a tenth of its width: plain bisection crawls
    # when the root sits next to one end (Newton overshooting a concave CDF from the
    # far side), while this shrinks the bracket by at least a tenth and usually by far
    # more.
    g_lo = f_lo - qq
    g_hi = f_hi - qq
    dx_old = u_hi - u_lo
    dx = dx_old.copy()
    # Brackets of the last two iterations: one that has not halved in two steps is
    # bisected, so a jump in the CDF (a spike) cannot stall regula falsi at 0.9 a step.
    width_1 = dx_old.copy()
    width_2 = dx_old * 2.0
    for _ in range(MAX_ITER):
        x = np.exp(u)
        f_cdf, f_pdf = evaluate(x, idx)
        g = f_cdf - qq
        below = g < 0
        u_lo = np.where(below, u, u_lo)
        g_lo = np.where(below, g, g_lo)
        u_hi = np.where(below, u_hi, u)
        g_hi = np.where(below, g_hi, g)
        slope = f_pdf * x
        width = u_hi - u_lo
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = u - g / slope
            falsi = u_lo + width * np.clip(-g_lo / (g_hi - g_lo), 0.1, 0.9)
        falsi = np.where(np.isfinite(falsi), falsi, u_lo + 0.5 * width)
        use_newton = (
            (slope > 0)
            & (newton > u_lo)
            & (newton < u_hi)
            & (np.abs(2.0 * g) <= np.abs(dx_old * slope))
        )
        falsi = np.where(width > 0.5 * width_2, u_lo + 0.5 * width, falsi)
        width_2, width_1 = width_1, width
        u_new = np.where(use_newton, newton, falsi)
        dx_old, dx = dx, u_new - u
        x_new = np.exp(u_new)
        tol = XTOL_ABS + XTOL_REL * x_new
        step = np.abs(x_new - x)
        # After a Newton step of relative size d the error left is of order d**2, so a
        # Newton step below NEWTON_STOP already lands within the tolerance.
        done = (
            (g == 0)
            | (use_newton & (step <= np.maximum(tol, NEWTON_STOP * x_new)))
            | (np.exp(u_hi) - np.exp(u_lo) <= tol)
        )
        if done.any():
            out[idx[done]] = np.where(g[done] == 0, x[done], x_new[done])
            live = ~done
            idx, qq, u_lo, u_hi = idx[live], qq[live], u_lo[live], u_hi[live]
            g_lo, g_hi = g_lo[live], g_hi[live]
            width_1, width_2 = width_1[live], width_2[live]
            u_new, dx_old, dx = u_new[live], dx_old[live], dx[live]
            if idx.size == 0:
                break
        u = u_new
    else:
        out[idx] = np.exp(u)
    return out.reshape(n, m)
