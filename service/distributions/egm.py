"""EGM: exponential + K Gaussians left-truncated at 0, with an optional atom at 0 (EGMN).

    p(t) = p0 * delta_0(t) + w0 * Exp(t; lambda) + sum_k w_k * TN_[0, inf)(t; mu_k, sigma_k)

Parameters, per row (seconds): ``lambda`` (n,), ``weights`` (n, K+1) with column 0
the exponential, ``mu`` and ``sigma`` (n, K), and optionally ``p0`` (n,) and ``point``
(n,), the point of a model with a point head of its own. Weights are
absolute masses, so ``p0 + sum(weights) == 1``; the class rescales by the total to
absorb float rounding in a model's softmax.

Two point numbers (see DESIGN, "Two point numbers"): :meth:`mean` is the exact E[T]
of this distribution, truncation and atom included, consistent with the CDF and the
quantiles; :meth:`point` is the paper's ``w0/lambda + sum_k w_k mu_k``, which ignores
truncation and which EGMN's L1 term pulls towards the median, unless the model emits
its own ``point``, which is then served as is.

Numerics: every Gaussian is handled through ``a = -mu/sigma`` (where the truncation
sits in standard units). When ``a >= 0`` (mu at or below zero) the normaliser
``1 - Phi(a)`` may underflow, so tails are kept scaled by ``exp(a**2 / 2)``;
ratios of scaled tails are exact, and ``b**2 - a**2`` is formed as
``(t/sigma) * (b + a)`` so it does not cancel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from service.distributions.arrays import BoolArray, Float32Array, FloatArray
from service.distributions.base import Distribution
from service.distributions.cache import cached, cached_rows
from service.distributions.constraints import (
    half_open_unit_interval,
    nonnegative,
    positive,
    real,
)
from service.distributions.params import Arg, Param, ParameterError, shapes
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
    arg_constraints: ClassVar[Mapping[str, Param]] = {
        "lambda": Param(positive),
        "weights": Param(nonnegative, vector=True),
        "mu": Param(real, vector=True),
        "sigma": Param(positive, vector=True),
        "p0": Param(half_open_unit_interval, required=False),
        "point": Param(nonnegative, required=False),
    }

    def _validate(self) -> None:
        k = self.mu.shape[1]
        if self._args["weights"].shape[1] != k + 1 or self.sigma.shape[1] != k:
            raise ParameterError(f"egm: inconsistent shapes {shapes(self._args)}")
        if (self._total <= 0).any():
            raise ParameterError("egm: weights sum to zero")

    # ----- parameters and the kernels' per-row constants ----------------------------------
    # What the float64 kernel reads is cached per row, so that the quantile search's
    # narrowed batches (``take``) gather it; the normalisers it is derived from are cached
    # for this batch only, and a narrowed batch that needs them (log_prob) derives them.

    lam = Arg("lambda")
    mu = Arg()
    sigma = Arg()

    @property
    def has_p0(self) -> bool:
        return "p0" in self._args

    @cached
    def _total(self) -> FloatArray:
        """The mass the model gave, by which it is rescaled to absorb a softmax's rounding."""
        atom = self._args.get("p0")
        return (np.zeros(self.n) if atom is None else atom) + self._args["weights"].sum(axis=1)

    @cached_rows
    def w(self) -> FloatArray:
        return self._args["weights"] / self._total[:, None]

    @cached_rows
    def p0(self) -> FloatArray:
        atom = self._args.get("p0")
        return (np.zeros(self.n) if atom is None else atom) / self._total

    @cached_rows
    def a(self) -> FloatArray:
        return -self.mu / self.sigma

    @cached_rows
    def upper(self) -> BoolArray:
        return self.a >= 0

    @cached
    def any_upper(self) -> bool:
        return bool(self.upper.any())

    @cached_rows
    def inv_sigma(self) -> FloatArray:
        return 1.0 / self.sigma

    @cached
    def _scaled_norm(self) -> FloatArray:
        # Tails are scaled by exp(s/2) with s = a**2 where a >= 0, else s = 0.
        # One erfcx serves both branches: norm_tail(a) is 0.5 erfcx(|a|/sqrt2) exp(-a**2/2).
        y = np.abs(self.a)
        half_e = 0.5 * erfcx_nonneg(y / SQRT2)
        with np.errstate(under="ignore", over="ignore"):
            tail = half_e * np.exp(-0.5 * y * y)
        return np.where(self.upper, half_e, 1.0 - tail)

    @cached
    def inv_scaled_norm(self) -> FloatArray:
        return 1.0 / self._scaled_norm

    @cached
    def log_norm(self) -> FloatArray:
        """log of sigma * sqrt(2 pi) * (1 - Phi(a)) * exp(s/2): the Gaussian density's divisor."""
        return np.log(self.sigma) + LOG_SQRT_2PI + np.log(self._scaled_norm)

    @cached
    def pdf_scale(self) -> FloatArray:
        return np.exp(-self.log_norm)

    # Per-component weights folded with the normalisers, for the kernel's reductions.

    @cached_rows
    def w_sf(self) -> FloatArray:
        return self.w[:, 1:] * self.inv_scaled_norm

    @cached_rows
    def w_pdf(self) -> FloatArray:
        return self.w[:, 1:] * self.pdf_scale

    @cached_rows
    def gauss_mass(self) -> FloatArray:
        return self.w[:, 1:].sum(axis=1)

    def params(self) -> dict[str, FloatArray]:
        out = {"lambda": self.lam, "weights": self.w, "mu": self.mu, "sigma": self.sigma}
        if self.has_p0:
            out["p0"] = self.p0
        if "point" in self._args:
            out["point"] = self._args["point"]
        return out

    # ----- moments ----------------------------------------------------------------------

    @cached
    def _component_moments(self) -> tuple[FloatArray, FloatArray]:
        """Each Gaussian's mean and variance: the mean and the spread both need them, and
        they cost two erfcx passes."""
        shift = trunc_mean_shift(self.a)
        mean_k = self.sigma * shift
        var_k = self.sigma**2 * trunc_var_factor(self.a, shift)
        return mean_k, var_k

    def mean(self) -> FloatArray:
        mean_k, _ = self._component_moments
        return self.w[:, 0] / self.lam + (self.w[:, 1:] * mean_k).sum(axis=1)

    def variance(self) -> FloatArray:
        mean_k, var_k = self._component_moments
        second = 2.0 * self.w[:, 0] / self.lam**2 + (self.w[:, 1:] * (var_k + mean_k**2)).sum(1)
        mean = self.w[:, 0] / self.lam + (self.w[:, 1:] * mean_k).sum(axis=1)
        return np.maximum(second - mean**2, 0.0)

    def point(self) -> FloatArray:
        """The model's own point when it emits one, else :meth:`paper_point`."""
        given = self._args.get("point")
        return self.paper_point() if given is None else given

    def paper_point(self) -> FloatArray:
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

    @cached
    def _constants32(self) -> dict[str, Float32Array]:
        """The per-row constants of the float32 kernel, cast once per distribution."""
        f32 = np.float32
        return {
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

    def _kernel32(
        self, t: Float32Array, slope: bool
    ) -> tuple[Float32Array, Float32Array, Float32Array | None]:
        # cdf_pdf's algebra in float32 with the one-formula erfcx, and on request the
        # density's derivative (each Gaussian's is its density times -(t - mu) / sigma**2).
        f32 = np.float32
        c = self._constants32
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
