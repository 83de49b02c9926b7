"""Synthetic watch-time logs whose true conditional density is a known EGM.

Used to check that EGMN can learn what it claims to learn: on real logs the true density is
unknown, here the NLL of the truth is the floor a perfect model reaches. The shape mimics the
real logs: an atom at exactly 0, a pile of quick skips (exponential, mean ~1-3 s) and modes
at a partial view, a full view and a replay of the video, whose positions scale with the
video's duration and whose masses depend on the user segment and the surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from model_export.data.features import CategoricalDecl, Decl, NumericDecl

SYNTHETIC_FEATURES: tuple[Decl, ...] = (
    CategoricalDecl("segment", "segment"),
    CategoricalDecl("surface", "surface", dtype="string"),
    NumericDecl("duration_ms", "duration_ms", log1p=True),
)

SURFACES = ("feed", "follow", "search")

# Mixture masses [exp, partial, full, replay] per user segment (before the surface tilt).
_SEGMENT_WEIGHTS = np.array(
    [
        [0.60, 0.25, 0.12, 0.03],
        [0.40, 0.30, 0.25, 0.05],
        [0.25, 0.25, 0.40, 0.10],
        [0.15, 0.20, 0.45, 0.20],
    ]
)
# The surface multiplies the quick-skip mass (searched videos are skipped less).
_SURFACE_SKIP = np.array([1.3, 1.0, 0.5])


@dataclass(frozen=True)
class SyntheticData:
    """Raw feature columns, labels in seconds and the true EGM parameters of every row."""

    frame: pd.DataFrame
    params: dict[str, np.ndarray]

    @property
    def y(self) -> np.ndarray:
        """Watch time in seconds."""
        return self.frame["watch_time_s"].to_numpy(dtype=np.float64)


def true_params(
    segment: np.ndarray, surface: np.ndarray, duration_s: np.ndarray, p0: float
) -> dict[str, np.ndarray]:
    """The EGM parameters (seconds, absolute masses) behind each row."""
    w = _SEGMENT_WEIGHTS[segment].copy()
    w[:, 0] *= _SURFACE_SKIP[surface]
    w /= w.sum(axis=1, keepdims=True)
    w *= 1.0 - p0
    lam = 1.0 / (1.0 + 0.5 * segment.astype(np.float64))  # quick skips last 1-2.5 s on average
    mu = np.stack([0.35 * duration_s, 1.0 * duration_s, 1.9 * duration_s], axis=1)
    sigma = np.stack([0.15 * duration_s, 0.08 * duration_s, 0.3 * duration_s], axis=1) + 0.5
    return {
        "lambda": lam,
        "weights": w,
        "mu": mu,
        "sigma": sigma,
        "p0": np.full(segment.shape, p0),
    }


def sample_egm(params: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One draw per row from the EGM (Gaussians truncated at 0 by rejection)."""
    n = params["lambda"].shape[0]
    masses = np.concatenate([params["p0"][:, None], params["weights"]], axis=1)
    u = rng.random(n)[:, None]
    comp = (u > np.cumsum(masses, axis=1)).sum(axis=1)
    comp = np.minimum(comp, masses.shape[1] - 1)  # guards against rounding at the top
    y = np.zeros(n)
    is_exp = comp == 1
    y[is_exp] = rng.exponential(1.0 / params["lambda"][is_exp])
    gauss = np.flatnonzero(comp >= 2)
    k = comp[gauss] - 2
    mu, sigma = params["mu"][gauss, k], params["sigma"][gauss, k]
    draw = rng.normal(mu, sigma)
    bad = draw < 0
    while bad.any():  # truncation at 0: redraw the negatives (rare: mu >> sigma here)
        draw[bad] = rng.normal(mu[bad], sigma[bad])
        bad = draw < 0
    y[gauss] = draw
    return y


def generate(n: int, seed: int = 0, p0: float = 0.08) -> SyntheticData:
    """``n`` rows of synthetic logs with their true density."""
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, 4, n)
    surface = rng.integers(0, 3, n)
    duration_s = np.exp(rng.uniform(np.log(5.0), np.log(120.0), n))
    params = true_params(segment, surface, duration_s, p0)
    y = sample_egm(params, rng)
    frame = pd.DataFrame(
        {
            "segment": segment.astype(np.int64),
            "surface": np.asarray(SURFACES, dtype=object)[surface],
            "duration_ms": np.round(duration_s * 1000.0),
            "watch_time_s": y,
        }
    )
    return SyntheticData(frame=frame, params=params)
