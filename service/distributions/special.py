"""Normal-distribution special functions in plain numpy.

The service may not depend on scipy (the serving image stays small), yet the
truncated and censored Gaussians of several families need the normal CDF to full
double precision, in the far tails too, where ``1 - Phi(x)`` underflows long before
the ratios we actually need do. Everything here is therefore built on the scaled
complementary error function ``erfcx(x) = exp(x**2) * erfc(x)``, which stays finite
where ``erfc`` underflows, so tail ratios can be taken in a scaled form.

``erfcx`` uses W. J. Cody's rational Chebyshev approximations (Math. Comp. 1969,
SPECFUN's CALERF), accurate to about 1e-16 relative; ``ndtri`` uses P. J. Acklam's
rational approximation refined by one Halley step against ``ndtr``.
All functions are ufunc-like: any shape in, the same shape out, no Python loops.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from service.distributions.arrays import Float32Array, FloatArray

SQRT2 = math.sqrt(2.0)
SQRT_2PI = math.sqrt(2.0 * math.pi)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_RSQRTPI = 1.0 / math.sqrt(math.pi)

# Cody's coefficients: erf on |x| <= 0.46875, erfcx on (0.46875, 4], erfcx on (4, inf).
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)  # fmt: skip
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)  # fmt: skip
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)  # fmt: skip
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)  # fmt: skip
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)  # fmt: skip
_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)  # fmt: skip

_THRESH = 0.46875
# Beyond this, erfcx(x) = 1/(sqrt(pi) x) to double precision.
_XHUGE = 6.71e7


# The rational functions below work in place on their argument's copy: at the batch
# sizes served, numpy's cost is the passes over memory, and temporaries double them.


def _erfcx_small(y: FloatArray) -> FloatArray:
    """erfcx on |y| <= 0.46875, through erf's odd rational function."""
    z = y * y
    num = _A[4] * z
    for c_num in _A[:3]:
        num += c_num
        num *= z
    num += _A[3]
    den = z + _B[0]
    for c_den in _B[1:]:
        den *= z
        den += c_den
    num *= y
    num /= den
    np.subtract(1.0, num, out=num)
    np.exp(z, out=z)
    num *= z
    return num


def _erfcx_mid(y: FloatArray) -> FloatArray:
    num = _C[8] * y
    den = y + _D[0]
    num += _C[0]
    num *= y
    den *= y
    for i in range(1, 7):
        num += _C[i]
        num *= y
        den += _D[i]
        den *= y
    num += _C[7]
    den += _D[7]
    num /= den
    return num


def _erfcx_large(y: FloatArray) -> FloatArray:
    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        z = y * y
        np.reciprocal(z, out=z)
        num = _P[5] * z
        den = z.copy()
        for i in range(4):
            num += _P[i]
            num *= z
            den += _Q[i]
            den *= z
        num += _P[4]
        den += _Q[4]
        num *= z
        num /= den
        np.subtract(_RSQRTPI, num, out=num)
        num /= y
        return np.where(y >= _XHUGE, _RSQRTPI / y, num)


def erfcx_nonneg(y: npt.ArrayLike) -> FloatArray:
    """``erfcx`` for ``y >= 0`` (NaN stays NaN): the hot kernel of every Gaussian family.

    The middle rational function is evaluated everywhere, in place, and only the
    elements outside its interval are gathered and overwritten: boolean-mask indexing
    of all three branches costs more than the arithmetic it saves.
    """
    y = np.asarray(y, dtype=np.float64)
    flat = y.ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        # overflows only where y > 4, which the large branch then overwrites
        out = _erfcx_mid(flat.copy())
    small = np.flatnonzero(flat <= _THRESH)
    if small.size:
        out[small] = _erfcx_small(flat[small])
    large = np.flatnonzero(flat > 4.0)
    if large.size:
        out[large] = _erfcx_large(flat[large])
    return out.reshape(y.shape)


# Numerical Recipes' erfcc (Chebyshev fit, fractional error below 1.2e-7 for all x >= 0),
# highest power first.
_ERFCC = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
          0.09678418, 0.37409196, 1.00002368, -1.26551223)  # fmt: skip


def erfcx_nonneg_f32(y: Float32Array) -> Float32Array:
    """``erfcx`` for float32 ``y >= 0``, to about 1.2e-7 relative: float32's own precision.

    One formula for every ``y``, so unlike :func:`erfcx_nonneg` there is no branch to
    gather: ``erfcx(y) = t * exp(P(t))`` with ``t = 1 / (1 + y/2)``. For the float32
    start of the quantile search only, never for a served number.
    """
    t = y * np.float32(0.5)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    acc = t * np.float32(_ERFCC[0])
    for c in _ERFCC[1:-1]:
        acc += np.float32(c)
        acc *= t
    acc += np.float32(_ERFCC[-1])
    with np.errstate(over="ignore", under="ignore"):
        np.exp(acc, out=acc)
    acc *= t
    return acc


def erfcx(x: npt.ArrayLike) -> FloatArray:
    """Scaled complementary error function for any real ``x`` (``inf`` below about -26.6)."""
    x = np.asarray(x, dtype=np.float64)
    out = erfcx_nonneg(np.abs(x))
    neg = x < 0
    if neg.any():
        xn = x[neg]
        with np.errstate(over="ignore"):
            out[neg] = 2.0 * np.exp(xn * xn) - out[neg]
    return out


def erfc(x: npt.ArrayLike) -> FloatArray:
    """Complementary error function, relative accuracy kept for large positive ``x``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(x)
    with np.errstate(under="ignore"):
        half = erfcx_nonneg(y) * np.exp(-y * y)
    return np.where(x < 0, 2.0 - half, half)


def norm_tail(x: npt.ArrayLike) -> FloatArray:
    """min(Phi(x), 1 - Phi(x)): the smaller tail mass, with full relative accuracy."""
    y = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(under="ignore", over="ignore"):
        return 0.5 * erfcx_nonneg(y / SQRT2) * np.exp(-0.5 * y * y)


def ndtr(x: npt.ArrayLike) -> FloatArray:
    """Standard normal CDF Phi(x)."""
    x = np.asarray(x, dtype=np.float64)
    tail = norm_tail(x)
    return np.where(x < 0, tail, 1.0 - tail)


def norm_sf(x: npt.ArrayLike) -> FloatArray:
    """Standard normal survival function 1 - Phi(x) = Phi(-x)."""
    return ndtr(-np.asarray(x, dtype=np.float64))


def log_ndtr(x: npt.ArrayLike) -> FloatArray:
    """log Phi(x), finite for any finite ``x`` (the lower tail is taken in log space)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(x)
    e = erfcx_nonneg(y / SQRT2)
    with np.errstate(divide="ignore", under="ignore"):
        lower = np.log(0.5 * e) - 0.5 * y * y
        upper = np.log1p(-0.5 * e * np.exp(-0.5 * y * y))
    return np.where(x < 0, lower, upper)


def norm_logpdf(x: npt.ArrayLike) -> FloatArray:
    """Standard normal log density."""
    x = np.asarray(x, dtype=np.float64)
    return -0.5 * x * x - LOG_SQRT_2PI


def norm_pdf(x: npt.ArrayLike) -> FloatArray:
    """Standard normal density."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(under="ignore"):
        return np.exp(-0.5 * x * x) / SQRT_2PI


def mills_ratio(a: npt.ArrayLike) -> FloatArray:
    """Inverse Mills ratio phi(a) / (1 - Phi(a)), stable for every ``a``.

    It is the shift of the mean of a normal left-truncated at ``a`` standard
    deviations, and with erfcx it needs no division of two underflowing numbers.
    """
    return SQRT_2_OVER_PI / erfcx(np.asarray(a, dtype=np.float64) / SQRT2)


# Beyond this truncation point (in standard units) the truncated normal's moments come
# from their asymptotic series, where the direct forms lose digits to cancellation.
_TRUNC_SERIES = 100.0


def trunc_mean_shift(a: npt.ArrayLike) -> FloatArray:
    """``M(a) - a``: the mean of a standard normal truncated below at ``a``, minus ``a``.

    ``M`` is the inverse Mills ratio. For large ``a`` both terms approach ``a`` and the
    difference (about ``1/a``) comes from the series ``1/a - 2/a**3 + 10/a**5 - ...``.
    """
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ad = np.minimum(a, _TRUNC_SERIES)
        direct = mills_ratio(ad) - ad
        big = np.maximum(a, _TRUNC_SERIES)
        e = 1.0 / (big * big)
        series = (1.0 + e * (-2.0 + e * (10.0 + e * (-74.0 + e * 706.0)))) / big
    return np.where(a > _TRUNC_SERIES, series, direct)


def trunc_var_factor(a: npt.ArrayLike, shift: npt.ArrayLike) -> FloatArray:
    """Variance of a standard normal truncated below at ``a``: ``1 - (M - a) M``.

    ``shift`` is :func:`trunc_mean_shift` of ``a``; for large ``a`` the variance (about
    ``1/a**2``) comes from its series.
    """
    a = np.asarray(a, dtype=np.float64)
    shift = np.asarray(shift, dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        direct = 1.0 - shift * (shift + a)
        big = np.maximum(a, _TRUNC_SERIES)
        e = 1.0 / (big * big)
        series = e * (1.0 + e * (-6.0 + e * (50.0 - e * 518.0)))
    return np.clip(np.where(a > _TRUNC_SERIES, series, direct), 0.0, 1.0)


_ICDF_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
           1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
_ICDF_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
           6.680131188771972e01, -1.328068155288572e01)  # fmt: skip
_ICDF_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
           -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
_ICDF_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
           3.754408661907416e00)  # fmt: skip
_P_LOW = 0.02425


def _poly(coeffs: tuple[float, ...], x: FloatArray) -> FloatArray:
    acc = np.full_like(x, coeffs[0])
    for c in coeffs[1:]:
        acc = acc * x + c
    return acc


def ndtri(p: npt.ArrayLike) -> FloatArray:
    """Inverse of the standard normal CDF, to about 1e-15 relative.

    Acklam's approximation (1.15e-9 relative) followed by one Halley step against
    ``ndtr``; the tail branch works on ``min(p, 1-p)`` so that levels close to 1
    keep their precision. ``p`` outside [0, 1] gives NaN, 0 and 1 give -inf, inf.
    """
    p = np.asarray(p, dtype=np.float64)
    # Subnormal levels would overflow the refinement; the answer moves by < 1e-3 there.
    q = np.maximum(np.minimum(p, 1.0 - p), np.finfo(np.float64).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(-2.0 * np.log(q))
        tail = _poly(_ICDF_C, r) / (_poly(_ICDF_D, r) * r + 1.0)  # negative (lower tail)
        c = p - 0.5
        s = c * c
        central = _poly(_ICDF_A, s) * c / (_poly(_ICDF_B, s) * s + 1.0)
        x = np.where(q < _P_LOW, np.where(p < 0.5, tail, -tail), central)
        # Halley refinement on the smaller tail so that p near 1 loses nothing.
        xs = np.where(p < 0.5, x, -x)
        e = ndtr(xs) - q
        u = e * SQRT_2PI * np.exp(0.5 * xs * xs)
        xs = xs - u / (1.0 + 0.5 * xs * u)
        x = np.where(p < 0.5, xs, -xs)
    x = np.where(p == 0.0, -np.inf, np.where(p == 1.0, np.inf, x))
    return np.where((p < 0.0) | (p > 1.0) | np.isnan(p), np.nan, x)
