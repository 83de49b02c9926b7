"""The report's plots: observed vs predicted distributions, quantile reliability, EGMN's mixture."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from model_export.evaluation.metrics import coverage
from model_export.evaluation.scoring import DURATION_GROUPS, Inputs, Scored
from service.distributions import Distribution

RELIABILITY_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))

_PLOT_EDGES = np.r_[0.0, np.geomspace(0.25, 1000.0, 31)]


def _pyplot():  # type: ignore[no-untyped-def]
    """matplotlib without a display (imported late: only the report needs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_distributions(
    path: Path, models: Sequence[Scored], y: np.ndarray, group: np.ndarray
) -> None:
    """Observed vs predicted watch-time distribution per duration group (log-time bins).

    Predicted: the mean over the group's rows of each model's mass in each bin, i.e. the
    distribution of a random impression of the group, comparable with the observed histogram.
    """
    plt = _pyplot()
    edges = _PLOT_EDGES
    pairs = np.stack([edges[:-1], edges[1:]], axis=1)
    pairs[-1, 1] = np.inf
    widths = np.log10(edges[2:]) - np.log10(edges[1:-1])
    n_panels = len(DURATION_GROUPS)
    cols = 4
    rows_ = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.3 * rows_), squeeze=False)
    centers = np.sqrt(edges[1:-1] * edges[2:])
    for i, (label, _, _) in enumerate(DURATION_GROUPS):
        ax = axes[i // cols][i % cols]
        rows = np.flatnonzero(group == i)
        if rows.size == 0:
            ax.set_visible(False)
            continue
        yg = y[rows]
        observed = np.histogram(np.clip(yg, 0.0, edges[-1]), bins=edges)[0] / rows.size
        zero_share = float(np.mean(yg < edges[1]))
        ax.bar(
            centers,
            observed[1:] / widths,
            width=np.diff(edges[1:]),
            color="0.8",
            label="observed",
            align="center",
        )
        for m in models:
            if m.dist is None:
                continue
            mass = m.dist.take(rows).interval_mass(pairs).mean(axis=0)
            ax.plot(centers, mass[1:] / widths, lw=1.3, label=m.name)
        ax.set_xscale("log")
        ax.set_title(
            f"duration {label}: {rows.size} rows, {zero_share:.0%} below {edges[1]:g} s",
            fontsize=9,
        )
        ax.set_xlabel("watch time (s)", fontsize=8)
        ax.set_ylabel("mass per decade", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, names = axes[0][0].get_legend_handles_labels()
    legend_ax = axes[-1][-1]
    legend_ax.set_visible(True)
    legend_ax.axis("off")
    legend_ax.legend(handles, names, fontsize=8, loc="center")
    fig.suptitle("Watch-time distribution on the test day: observed vs predicted", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def reliability(dist: Distribution, y: np.ndarray) -> np.ndarray:
    """Share of labels at or below the predicted quantile, at each reliability level."""
    cov = coverage(dist, y, RELIABILITY_LEVELS)
    return np.array([cov[f"coverage_{lv:g}"] for lv in RELIABILITY_LEVELS])


def plot_reliability(path: Path, curves: Mapping[str, np.ndarray]) -> None:
    """Reliability diagram of the quantiles: observed coverage against the nominal level."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    levels = np.asarray(RELIABILITY_LEVELS)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="ideal")
    for name, cov in curves.items():
        ax.plot(levels, cov, marker="o", ms=3, lw=1.2, label=name)
    ax.set_xlabel("quantile level q")
    ax.set_ylabel("share of test labels <= predicted q-quantile")
    ax.set_title("Quantile reliability, test day")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def mixture_profile(
    params: Mapping[str, np.ndarray], duration_ms: np.ndarray, n_bins: int = 14
) -> dict[str, np.ndarray]:
    """EGMN's masses by video duration: atom, exponential, and Gaussians by where they sit.

    Gaussians are pooled by ``mu_k / duration``: below 0.5 (partial views), 0.5-1.5 (about
    one full view) and above 1.5 (replays), so the profile reads in the video's own terms.
    """
    d = np.asarray(duration_ms, dtype=np.float64) / 1000.0
    known = np.isfinite(d) & (d > 0)
    edges = np.geomspace(
        max(float(np.quantile(d[known], 0.01)), 1.0), float(d[known].max()), n_bins + 1
    )
    w = params["weights"]
    p0 = params.get("p0", np.zeros(w.shape[0]))
    ratio = params["mu"] / np.where(known, d, np.nan)[:, None]
    parts = {
        "p0 (exactly 0 s)": p0,
        "exponential (quick skips)": w[:, 0],
        "Gaussians mu < 0.5 duration": np.where(ratio < 0.5, w[:, 1:], 0.0).sum(axis=1),
        "Gaussians 0.5-1.5 duration": np.where((ratio >= 0.5) & (ratio <= 1.5), w[:, 1:], 0.0).sum(
            axis=1
        ),
        "Gaussians mu > 1.5 duration": np.where(ratio > 1.5, w[:, 1:], 0.0).sum(axis=1),
    }
    which = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, n_bins - 1)
    out: dict[str, np.ndarray] = {"duration_s": np.sqrt(edges[:-1] * edges[1:])}
    for name, values in parts.items():
        out[name] = np.array(
            [
                values[known & (which == b)].mean() if (known & (which == b)).any() else np.nan
                for b in range(n_bins)
            ]
        )
    return out


def plot_mixture(path: Path, profile: Mapping[str, np.ndarray]) -> None:
    """Stacked mixture masses of EGMN over video duration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    x = profile["duration_s"]
    names = [k for k in profile if k != "duration_s"]
    ax.stackplot(x, *[np.nan_to_num(profile[k]) for k in names], labels=names, alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlabel("video duration (s)")
    ax.set_ylabel("mean mixture mass")
    ax.set_ylim(0, 1)
    ax.set_title("EGMN mixture weights over video duration (test day)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_plots(
    reports_dir: Path, inputs: Inputs, egmn_params: Mapping[str, np.ndarray] | None
) -> list[str]:
    """The three PNGs; returns their file names."""
    served = [m for m in inputs.models if m.dist is not None]
    names = ["evaluation_distributions.png", "evaluation_reliability.png"]
    plot_distributions(reports_dir / names[0], served, inputs.y, inputs.group)
    curves = {m.name: reliability(m.dist, inputs.y) for m in served if m.dist is not None}
    plot_reliability(reports_dir / names[1], curves)
    if egmn_params is not None:
        names.append("evaluation_egmn_mixture.png")
        plot_mixture(reports_dir / names[2], mixture_profile(egmn_params, inputs.duration_ms))
    return names
