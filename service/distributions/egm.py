"""EGM: exponential + K Gaussians left-truncated at 0, with an optional atom at 0 (EGMN).

    p(t) = p0 * delta_0(t) + w0 * Exp(t; lambda) + sum_k w_k * TN_[0, inf)(t; mu_k, sigma_k)

Parameters, per row (seconds): ``lambda`` (n,), ``weights`` (n, K+1) with column 0
the exponential, ``mu`` and ``sigma`` (n, K), and optionally ``p0`` (n,). Weights are
absolute masses, so ``p0 + sum(weights) == 1``; the class rescales by the total to
absorb float rounding in a model's softmax.

Two point numbers (see DESIGN, "Two point numbers"): :meth:`mean` is the exact E[T]
of this distribution, truncation and atom included, consistent with the CDF and the
quantiles; :meth:`point` is the paper's ``w0/lambda + sum_k w_k mu_k``, which ignores
truncation and which EGMN's L1 term pulls towards the median.

Numerics: every Gaussian is handled through ``a = -mu/sigma`` (where the truncation
sits in standard units). When ``a >= 0`` (mu at or below zero) the normaliser
``1 - Phi(a)`` may underflow, so tails are kept scaled by ``exp(a**2 / 2)``;
ratios of scaled tails are exact, and ``b**2 - a**2`` is formed as
``(t/sigma) * (b + a)`` so it does not cancel.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from service.distributions.arrays import Float32Array, FloatArray
from service.distributions.base import Distribution, ParameterError, as_float
from service.distributions.special import (
    LOG_SQRT_2PI,
    SQRT2,
    erfcx_nonneg,
    erfcx_nonneg_f32,
    trunc_mean_shift,
    trunc_var_factor,
)


class EGM(Distribution):
    """Exponential-Gaussian mixture on [0, inf) with an optional atom at zero."""

    family: ClassVar[str] = "egm"
    has_float32_kernel: ClassVar[bool] = True
    has_float32_slope: ClassVar[bool] = True
    required_params: ClassVar[tuple[str, ...]] = ("lambda", "weights", "mu", "sigma")
    optional_params: ClassVar[tuple[str, ...]] = ("p0",)
    per_row: ClassVar[tuple[str, ...]] = (
        "lam",
        "w",
        "mu",
        "sigma",
        "p0",
        "a",
        "upper",
        "inv_sigma",
        "inv_scaled_norm",
        "pdf_scale",
        "log_norm",
        "w_sf",
        "w_pdf",
        "gauss_mass",
    )

    def __init__(
        self,
        *,
        weights: npt.ArrayLike,
        mu: npt.ArrayLike,
        sigma: npt.ArrayLike,
        p0: npt.ArrayLike | None = None,
        **kw: npt.ArrayLike,
    ) -> None:
        if set(kw) != {"lambda"}:
            raise ParameterError(f"egm: unexpected parameter(s) {sorted(set(kw) - {'lambda'})}")
        lam = as_float("lambda", kw["lambda"], 1)
        w = as_float("weights", weights, 2)
        mu_ = as_float("mu", mu, 2)
        sigma_ = as_float("sigma", sigma, 2)
        n, k = mu_.shape
        atom = np.zeros(n) if p0 is None else as_float("p0", p0, 1)
        if (
            lam.shape != (n,)
            or w.shape != (n, k + 1)
            or sigma_.shape != (n, k)
            or atom.shape != (n,)
        ):
            raise ParameterError(
                f"egm: inconsistent shapes lambda {lam.shape}, weights {w.shape}, "
                f"mu {mu_.shape}, sigma {sigma_.shape}, p0 {atom.shape}"
            )
        if (lam <= 0).any() or (sigma_ <= 0).any():
            raise ParameterError("egm: lambda and sigma must be positive")
        if (w < 0).any() or (atom < 0).any() or (atom >= 1).any():
            raise ParameterError("egm: weights must be >= 0 and p0 in [0, 1)")
        total = atom + w.sum(axis=1)
        if (total <= 0).any():
            raise ParameterError("egm: weights sum to zero")
        self.n = n
        self.lam = lam
        self.w = w / total[:, None]
        self.p0 = atom / total
        self.mu = mu_
        self.sigma = sigma_
        self.has_p0 = p0 is not None
        self.a = -mu_ / sigma_
        upper = self.a >= 0
        self.upper = upper
        self.inv_sigma = 1.0 / sigma_
        # Tails are scaled by exp(s/2) with s = a**2 where a >= 0, else s = 0.
        # One erfcx serves both branches: norm_tail(a) is 0.5 erfcx(|a|/sqrt2) exp(-a**2/2).
        y = np.abs(self.a)
        half_e = 0.5 * erfcx_nonneg(y / SQRT2)
        with np.errstate(under="ignore", over="ignore"):
            tail = half_e * np.exp(-0.5 * y * y)
        scaled_norm = np.where(upper, half_e, 1.0 - tail)
        self.inv_scaled_norm = 1.0 / scaled_norm
        # log of sigma * sqrt(2 pi) * (1 - Phi(a)) * exp(s/2): the Gaussian density's divisor.
        self.log_norm = np.log(sigma_) + LOG_SQRT_2PI + np.log(scaled_norm)
        self.pdf_scale = np.exp(-self.log_norm)
        self.any_upper = bool(upper.any())
        # per-component weights folded with the normalisers, for the kernel's reductions
        self.w_sf = self.w[:, 1:] * self.inv_scaled_norm
        self.w_pdf = self.w[:, 1:] * self.pdf_scale
        self.gauss_mass = self.w[:, 1:].sum(axis=1)

    def params(self) -> dict[str, FloatArray]:
        out = {"lambda": self.lam, "weights": self.w, "mu": self.mu, "sigma": self.sigma}
        if self.has_p0:
            out["p0"] = self.p0
        return out

    # ----- moments ----------------------------------------------------------------------

    def _component_moments(self) -> tuple[FloatArray, FloatArray]:
        # Cached: the mean and the spread both need them, and they cost two erfcx passes.
        cached: tuple[FloatArray, FloatArray] | None = self.__dict__.get("_cached_moments")
        if cached is None:
            shift = trunc_mean_shift(self.a)
            mean_k = self.sigma * shift
            var_k = self.sigma**2 * trunc_var_factor(self.a, shift)
            cached = self._cached_moments = (mean_k, var_k)
        return cached

    def mean(self) -> FloatArray:
        mean_k, _ = self._component_moments()
        return self.w[:, 0] / self.lam + (self.w[:, 1:] * mean_k).sum(axis=1)

    def variance(self) -> FloatArray:
        mean_k, var_k = self._component_moments()
        second = 2.0 * self.w[:, 0] / self.lam**2 + (self.w[:, 1:] * (var_k + mean_k**2)).sum(1)
        mean = self.w[:, 0] / self.lam + (self.w[:, 1:] * mean_k).sum(axis=1)
        return np.maximum(second - mean**2, 0.0)

    def point(self) -> FloatArray:
        """The paper's point: ``w0/lambda + sum_k w_k mu_k`` (not E[T])."""
        return self.w[:, 0] / self.lam + (self.w[:, 1:] * self.mu).sum(axis=1)

    def atom(self) -> FloatArray:
        return self.p0

    def upper_guess(self) -> FloatArray:
        # Past every component's 1 - 1e-17 point: the exponential's and each Gaussian's.
        used = self.w[:, 1:] > 0
        gauss = np.where(used, np.maximum(self.mu, 0.0) + 9.0 * self.sigma, 0.0).max(axis=1)
        expo = np.where(self.w[:, 0] > 0, 40.0 / self.lam, 0.0)
        return np.maximum(gauss, expo)

    # ----- kernels ------------------------------------------------------------------------

    def _half_sq(self, t: FloatArray, b: FloatArray) -> FloatArray:
        """(b**2 - s) / 2 per component, without cancellation where s = a**2 is large."""
        sq = b * b
        if self.any_upper:
            tt = t[:, :, None] * self.inv_sigma[:, None, :]
            alt = tt * (b + self.a[:, None, :])
            sq = np.where(self.upper[:, None, :], alt, sq)
        sq *= 0.5
        return sq

    def _standardize(self, t: FloatArray) -> FloatArray:
        b = t[:, :, None] - self.mu[:, None, :]
        b *= self.inv_sigma[:, None, :]
        return b

    def cdf_pdf(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        # The hot path of every quantile search: in-place where possible, since at
        # serving batch sizes numpy's cost is passes over memory.
        b = self._standardize(t)
        with np.errstate(under="ignore", over="ignore"):
            e = self._half_sq(t, b)
            np.negative(e, out=e)
            np.exp(e, out=e)
            y = np.abs(b)
            y *= 1.0 / SQRT2
            r = erfcx_nonneg(y)
            r *= e
            r *= 0.5
            # r becomes each component's scaled survival: the tail above b, or 1 - tail.
            np.subtract(1.0, r, out=r, where=b < 0)
            lam_t = self.lam[:, None] * t
            w0 = self.w[:, 0:1]
            cdf = self.gauss_mass[:, None] - np.einsum("nmk,nk->nm", r, self.w_sf)
            cdf += self.p0[:, None]
            cdf -= w0 * np.expm1(-lam_t)
            pdf = np.einsum("nmk,nk->nm", e, self.w_pdf)
            pdf += (w0 * self.lam[:, None]) * np.exp(-lam_t)
        return cdf, pdf

    def cdf_pdf32(self, t: Float32Array) -> tuple[Float32Array, Float32Array]:
        cdf, pdf, _ = self._kernel32(t, False)
        return cdf, pdf

    def cdf_pdf_dpdf32(self, t: Float32Array) -> tuple[Float32Array, Float32Array, Float32Array]:
        cdf, pdf, dpdf = self._kernel32(t, True)
        assert dpdf is not None
        return cdf, pdf, dpdf

    def _constants32(self) -> dict[str, Float32Array]:
        """The per-row constants of the float32 kernel, cast once per distribution."""
        cached: dict[str, Float32Array] | None = self.__dict__.get("_cached_f32")
        if cached is None:
            f32 = np.float32
            cached = self._cached_f32 = {
                "mu": self.mu.astype(f32),
                "inv_sigma": self.inv_sigma.astype(f32),
                "a": self.a.astype(f32),
                "lam": self.lam.astype(f32)[:, None],
                "w0": self.w[:, 0:1].astype(f32),
                "gauss_mass": self.gauss_mass.astype(f32)[:, None],
                "p0": self.p0.astype(f32)[:, None],
                "w_sf": self.w_sf.astype(f32),
                "w_pdf": self.w_pdf.astype(f32),
                "w_dpdf": (self.w_pdf * self.inv_sigma).astype(f32),
            }
        return cached

    def _kernel32(
        self, t: Float32Array, slope: bool
    ) -> tuple[Float32Array, Float32Array, Float32Array | None]:
        # cdf_pdf's algebra in float32 with the one-formula erfcx, and on request the
        # density's derivative (each Gaussian's is its density times -(t - mu) / sigma**2).
        f32 = np.float32
        c = self._constants32()
        b = t[:, :, None] - c["mu"][:, None, :]
        b *= c["inv_sigma"][:, None, :]
        with np.errstate(under="ignore", over="ignore", invalid="ignore"):
            e = b * b
            if self.any_upper:
                alt = t[:, :, None] * c["inv_sigma"][:, None, :]
                alt *= b + c["a"][:, None, :]
                e = np.where(self.upper[:, None, :], alt, e)
            e *= f32(-0.5)
            np.exp(e, out=e)
            y = np.abs(b)
            y *= f32(1.0 / SQRT2)
            r = erfcx_nonneg_f32(y)
            r *= e
            r *= f32(0.5)
            np.subtract(f32(1.0), r, out=r, where=b < 0)
            lam, w0 = c["lam"], c["w0"]
            lam_t = lam * t
            cdf = c["gauss_mass"] - np.einsum("nmk,nk->nm", r, c["w_sf"])
            cdf += c["p0"]
            cdf -= w0 * np.expm1(-lam_t)
            decay = np.exp(-lam_t)
            decay *= w0 * lam
            pdf = np.einsum("nmk,nk->nm", e, c["w_pdf"])
            pdf += decay
            dpdf = None
            if slope:
                e *= b
                dpdf = np.einsum("nmk,nk->nm", e, c["w_dpdf"])
                decay *= lam
                dpdf += decay
                np.negative(dpdf, out=dpdf)
        return cdf, pdf, dpdf

    def _log_prob(self, t: FloatArray) -> FloatArray:
        half_sq = self._half_sq(t, self._standardize(t))
        with np.errstate(divide="ignore"):
            log_w = np.log(self.w)
            log_exp = log_w[:, None, 0] + np.log(self.lam)[:, None] - self.lam[:, None] * t
            log_g = log_w[:, None, 1:] - half_sq - self.log_norm[:, None, :]
            terms = np.concatenate([log_exp[:, :, None], log_g], axis=2)
            top = terms.max(axis=2)
            safe_top = np.where(np.isfinite(top), top, 0.0)
            dens = safe_top + np.log(np.exp(terms - safe_top[:, :, None]).sum(axis=2))
            dens = np.where(np.isfinite(top), dens, -np.inf)
            at_atom = np.log(self.p0)[:, None]
        return np.where((t == 0) & (self.p0[:, None] > 0), at_atom, dens)
