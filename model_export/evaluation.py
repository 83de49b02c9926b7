"""The evaluation report: every model side by side on the test day, overall and by duration.

``python -m model_export report`` scores each shipped model directory through the serving
path (manifest -> numpy features -> onnxruntime -> the family's numpy post-processor), so
the figures are those of what the service serves, and D2Q (no served family) from its
checkpoint. It writes ``reports/evaluation.md``, ``reports/evaluation.json`` and three PNG
plots. Nothing here is fitted: the test day is only scored.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

from model_export.baseline_train import BaselineRun, d2q_point
from model_export.baselines import per_video_median
from model_export.data import Split, labels, raw_columns
from model_export.metrics import (
    METRIC_NOTES,
    coverage,
    crps,
    evaluate_distribution,
    evaluate_point,
    mae,
    roc_auc,
    xauc,
)
from model_export.onnx_eval import ExportedModel
from model_export.pipeline import encode
from service.distributions import Distribution
from service.runtime.features import encode_features
from service.versions import highest_version_dir

DURATION_GROUPS: tuple[tuple[str, float, float], ...] = (
    ("unknown", math.nan, math.nan),
    ("<15 s", 0.0, 15.0),
    ("15-30 s", 15.0, 30.0),
    ("30-60 s", 30.0, 60.0),
    ("60-120 s", 60.0, 120.0),
    ("120-300 s", 120.0, 300.0),
    (">=300 s", 300.0, math.inf),
)
"""Video-duration groups of the breakdown (seconds); 0 ms or missing is 'unknown'."""

LABEL_RANGES: tuple[tuple[str, float, float], ...] = (
    ("0-0.5 s", 0.0, 0.5),
    ("0.5-3 s", 0.5, 3.0),
    ("3-10 s", 3.0, 10.0),
    ("10-30 s", 10.0, 30.0),
    ("30-100 s", 30.0, 100.0),
    (">100 s", 100.0, math.inf),
)
"""Ranges of the (positive) label for the breakdown of NLL y>0: where the likelihood is won."""

RELIABILITY_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))

# (key, header, lower is better): the headline columns, in order.
HEADLINE: tuple[tuple[str, str, bool], ...] = (
    ("mae_point", "MAE point (s)", True),
    ("xauc_point", "XAUC point", False),
    ("mae_median", "MAE median (s)", True),
    ("nll_positive", "NLL y>0", True),
    ("crps", "CRPS", True),
    ("coverage_0.1", "cov 10%", False),
    ("coverage_0.5", "cov 50%", False),
    ("coverage_0.9", "cov 90%", False),
    ("quick_skip_auc", "skip AUC", False),
    ("quick_skip_brier", "skip Brier", True),
)
GROUP_COLUMNS = ("mae_point", "xauc_point", "nll_positive", "crps", "quick_skip_auc")
COVERAGE_KEYS = {"coverage_0.1": 0.1, "coverage_0.5": 0.5, "coverage_0.9": 0.9}


def duration_group(duration_ms: np.ndarray) -> np.ndarray:
    """Index into :data:`DURATION_GROUPS` of each row."""
    d = np.asarray(duration_ms, dtype=np.float64) / 1000.0
    known = np.isfinite(d) & (d > 0)
    out = np.zeros(d.shape, dtype=np.int64)
    for i, (_, lo, hi) in enumerate(DURATION_GROUPS[1:], start=1):
        out[known & (d >= lo) & (d < hi)] = i
    return out


@dataclass
class Scored:
    """One model's predictions on the test day and what the report says about it."""

    name: str
    family: str | None
    dist: Distribution | None
    point: np.ndarray
    train_seconds: float | None = None
    train_cpu_seconds: float | None = None
    rows_per_s: float | None = None
    onnx_mb: float | None = None
    description: str = ""
    overall: dict[str, float] = field(default_factory=dict)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    nll_by_label: dict[str, float] = field(default_factory=dict)


def score(scored: Scored, y: np.ndarray, group: np.ndarray, threshold_s: float = 3.0) -> None:
    """Fill the overall and per-group metrics (a point-only model gets MAE and XAUC)."""
    if scored.dist is None:
        scored.overall = evaluate_point(scored.point, y)
    else:
        scored.overall = evaluate_distribution(scored.dist, y, threshold_s)
        log_p = scored.dist.log_prob(y[:, None])[:, 0]
        for label, lo, hi in LABEL_RANGES:
            rows = (y > lo) & (y <= hi)
            if rows.any():
                scored.nll_by_label[label] = float(-np.mean(log_p[rows]))
    for i, (label, _, _) in enumerate(DURATION_GROUPS):
        rows = np.flatnonzero(group == i)
        if rows.size < 2:
            continue
        yg = y[rows]
        out = {"rows": float(rows.size), "mae_point": mae(scored.point[rows], yg)}
        out["xauc_point"] = xauc(scored.point[rows], yg)
        if scored.dist is not None:
            part = scored.dist.take(rows)
            log_p = part.log_prob(yg[:, None])[:, 0]
            out["nll_positive"] = float(-np.mean(log_p[yg > 0])) if (yg > 0).any() else math.nan
            out["crps"] = crps(part, yg)
            out["quick_skip_auc"] = roc_auc(part.quick_skip_prob(threshold_s), yg <= threshold_s)
            out.update(coverage(part, yg, (0.1, 0.5, 0.9)))
        scored.groups[label] = out


def onnx_rows_per_s(
    model_dir: Path, inputs: Mapping[str, np.ndarray], batch: int = 1024, repeats: int = 3
) -> float:
    """Rows per second of the ONNX graph alone: one thread, batches of ``batch`` rows.

    Best of ``repeats`` passes over the rows (the machine is shared; the best pass is the
    least disturbed one). Features and the post-processor are not included: they are the
    same numpy code for every model except the family's arithmetic.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    n = len(next(iter(inputs.values())))
    chunks = [{k: v[a : a + batch] for k, v in inputs.items()} for a in range(0, n, batch)]
    session.run(None, chunks[0])  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for chunk in chunks:
            session.run(None, chunk)
        best = min(best, time.perf_counter() - start)
    return n / best


def score_exported(
    model_dir: Path, test: pd.DataFrame, label: str | None = None, measure_speed: bool = True
) -> Scored:
    """A model directory scored through the serving path."""
    model = ExportedModel(model_dir)
    manifest = model.manifest
    columns = raw_columns(test, manifest.source_columns())
    dist = model.distribution(columns)
    extras = manifest.extras
    seconds = extras.get("train_seconds")
    cpu = extras.get("train_cpu_seconds")
    speed = None
    if measure_speed:
        speed = onnx_rows_per_s(model_dir, encode_features(manifest, columns))
    return Scored(
        name=label or manifest.name,
        family=manifest.family,
        dist=dist,
        point=dist.point(),
        train_seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
        train_cpu_seconds=float(cpu) if isinstance(cpu, (int, float)) else None,
        rows_per_s=speed,
        onnx_mb=(model_dir / "model.onnx").stat().st_size / 1e6,
        description=manifest.description,
    )


# ----- plots ----------------------------------------------------------------------------------

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


# ----- tables ---------------------------------------------------------------------------------


def _fmt(value: float | None, key: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key.startswith("mae") or key == "crps":
        return f"{value:.3f}"
    return f"{value:.4f}"


def _better(key: str, a: float, b: float) -> bool:
    """True when ``a`` is strictly better than ``b`` in column ``key``."""
    if key in COVERAGE_KEYS:
        return abs(a - COVERAGE_KEYS[key]) < abs(b - COVERAGE_KEYS[key])
    lower = next(low for k, _, low in HEADLINE if k == key)
    return a < b if lower else a > b


def best_of(models: Sequence[Scored], key: str) -> str | None:
    """Name of the best model in a column (coverage: closest to its level)."""
    best: Scored | None = None
    for m in models:
        v = m.overall.get(key)
        if v is None or math.isnan(v):
            continue
        if best is None or _better(key, v, best.overall[key]):
            best = m
    return None if best is None else best.name


def headline_table(models: Sequence[Scored]) -> str:
    """The markdown table of the overall figures, one row per model."""
    header = [
        "model",
        "family",
        *(h for _, h, _ in HEADLINE),
        "train (s)",
        "train CPU (s)",
        "ONNX rows/s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        cells = [m.name, m.family or "- (offline)"]
        cells += [_fmt(m.overall.get(k), k) for k, _, _ in HEADLINE]
        cells.append("-" if m.train_seconds is None else f"{m.train_seconds:.0f}")
        cells.append("-" if m.train_cpu_seconds is None else f"{m.train_cpu_seconds:.0f}")
        cells.append("-" if m.rows_per_s is None else f"{m.rows_per_s:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_table(models: Sequence[Scored], key: str) -> str:
    """One metric by duration group (rows = models)."""
    labels_ = [g for g, _, _ in DURATION_GROUPS]
    counts = next((m.groups for m in models if m.groups), {})
    header = ["model", *(f"{g} ({int(counts[g]['rows'])})" if g in counts else g for g in labels_)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        cells = [m.name] + [_fmt(m.groups.get(g, {}).get(key), key) for g in labels_]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def label_table(models: Sequence[Scored], y: np.ndarray) -> str:
    """NLL by label range, rows = models with a density."""
    header = ["model"]
    for label, lo, hi in LABEL_RANGES:
        header.append(f"{label} ({np.mean((y > lo) & (y <= hi)):.1%})")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        if m.nll_by_label:
            cells = [m.name] + [_fmt(m.nll_by_label.get(g)) for g, _, _ in LABEL_RANGES]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(models: Sequence[Scored], reference: str = "egmn") -> list[str]:
    """One line per headline column: who is best, and whether EGMN is."""
    out = []
    for key, header, _ in HEADLINE:
        best = best_of(models, key)
        if best is None:
            continue
        egmn = next((m for m in models if m.name == reference), None)
        if best == reference:
            out.append(f"- {header}: EGMN is best.")
        elif egmn is not None and key in egmn.overall:
            winner = next(m for m in models if m.name == best)
            out.append(
                f"- {header}: **{best} wins** ({_fmt(winner.overall[key], key)} vs EGMN "
                f"{_fmt(egmn.overall[key], key)})."
            )
    return out


# ----- the report -----------------------------------------------------------------------------

REPORT_ORDER = ("egmn", "vr", "wlr", "ziln", "softmax", "cread", "d2q")


@dataclass
class Inputs:
    """What the report is computed from: scored models, the test labels and their groups."""

    models: list[Scored]
    y: np.ndarray
    group: np.ndarray
    duration_ms: np.ndarray
    test_date: int | None
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    window_text: str = ""
    fairness_text: str = ""


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_json(path: Path, inputs: Inputs) -> None:
    """reports/evaluation.json: every figure of the markdown report, machine-readable."""
    doc = {
        "test_date": inputs.test_date,
        "rows": int(inputs.y.size),
        "duration_groups": [g for g, _, _ in DURATION_GROUPS],
        "models": {
            m.name: {
                "family": m.family,
                "description": m.description,
                "train_seconds": m.train_seconds,
                "train_cpu_seconds": m.train_cpu_seconds,
                "onnx_rows_per_s": None if m.rows_per_s is None else round(m.rows_per_s),
                "onnx_mb": None if m.onnx_mb is None else round(m.onnx_mb, 3),
                "overall": _json_safe(m.overall),
                "by_duration": _json_safe(m.groups),
                "nll_by_label_range": _json_safe(m.nll_by_label),
            }
            for m in inputs.models
        },
        "references": _json_safe(inputs.references),
        "notes": dict(METRIC_NOTES),
    }
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


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


FAIRNESS = """\
- Same rows and split for every model: training days {train}, validation day {val} (early
  stopping, and the few constants fitted after training), test day {test} (scored once, for
  this report and the manifests; no decision was taken on it).
- Same inputs: the feature schema fitted on the training days (ids seen < 5 times -> OOV,
  log duration with a missing indicator, user and video table columns), encoded by the
  service's own encoder; the exported graphs read exactly those tensors.
- Same network: 16-dim embeddings and EGMN's MLP backbone (256, 128, 64, BatchNorm, ReLU,
  dropout 0.2) for every model; only the head and the loss differ. Labels in units of 10 s.
- Same optimisation budget: Adam, lr 2e-3, batch 2048, at most 12 epochs, early stopping on
  the validation value of each model's own loss (patience 2, best epoch restored), embedding
  L2 1e-6, seed 0.
- Same tuning budget: none on the test day for anyone. EGMN: the paper's settings plus four
  configurations on the validation day (`tuning.md`); each baseline got one configuration, the
  paper's default where the paper gives one (bucket count, split points, loss weights), set
  before any test figure was seen. Post-hoc fitting on the validation day: EGMN's calibration
  (its report) and VR's spread; the other baselines are served as trained.
"""

MODELS_TEXT = """\
- **egmn**: the served model (`models/egmn/2`): point mass at 0 + exponential + 10 truncated
  Gaussians, loss NLL + 0.1 sum(w log w) + 0.5 L1 (the paper's with a halved L1 weight, chosen
  on the validation day), calibrated on the validation day. Point: the paper's
  `w0/lambda + sum w_k mu_k`. `models/egmn/1` (the paper's weights) stays reachable by version.
- **vr** (value regression): MSE on the label; served as a `normal` censored at 0 whose one
  spread is the maximum-likelihood value on the validation day. Point: `max(loc, 0)`.
- **wlr** (weighted logistic regression): each impression a positive weighted by its watch
  time and a unit-weight negative; odds = expected watch time; served as an `exponential`
  with rate 1/odds. Point: the odds.
- **ziln** (zero-inflated lognormal): BCE on `y > 0` + lognormal NLL of the positive labels;
  served as `ziln`. Point: the mean.
- **softmax** (bucket classification): cross-entropy over 20 buckets with edges
  `[0, geomspace(0.5 s, 800 s, 20)]` (each bucket 1.47x wider than the last; the top one open);
  served as `histogram`. Point: the bucket-midpoint mean.
- **cread**: one classifier `P(T > t_m)` per split point, the points at training-label
  quantiles `F^-1(gamma(m/31))`, `gamma(x) = (1 - e^(-2x)) / (1 - e^(-2))`, m = 1..30 (points at
  0 s and closer than 0.1 s dropped); loss = sum of BCE + monotonicity penalty + Huber
  (delta 10 s) on the restored mean; served as `survival` (running minimum, plus a 0.1%
  floor so that no segment holds zero mass). Point: the restored mean.
- **d2q** (duration-deconfounded quantile): 30 equal-frequency duration groups of the
  training days (+ one for unknown durations); target = the label's mid-rank level among its
  group's training labels; MSE on a sigmoid output; prediction mapped back through the
  group's training quantile function. No density: point metrics only, and not served.
"""

METRICS_TEXT = """\
- MAE / XAUC point: of each model's own point prediction (`point_s` in the API). XAUC: share
  of test pairs with different labels that the prediction orders correctly (ties 1/2).
- MAE median: of the served distribution's median.
- **NLL y>0** (main likelihood column): mean `-log density` at the label, per second, over the
  test rows whose label is above 0 s. One label in ten is exactly 0 s: families with an atom
  at 0 (EGMN's p0, the censored normal, ZILN) score such a row by `-log P(T = 0)`, a
  probability, while purely continuous ones (exponential, histogram, survival) score it by
  a density; the two are not comparable, so the all-row NLL is in `evaluation.json` only.
  On y > 0 every family is scored by a density in 1/s.
- CRPS: `integral (F(t) - 1{t >= y})^2 dt` in seconds; proper for every family, atoms included.
- cov q: share of test labels at or below the predicted q-quantile (ideal: q).
- skip AUC / Brier: `P(T <= 3 s)` against `y <= 3 s`.
- train (s): wall time of training and post-fitting (EGMN's calibration, VR's spread) in the
  build, torch on 2 threads of a 2-core machine that another job may share; train CPU (s):
  the CPU time of the same work. Both come from one build and move by a factor of 2 to 5
  between builds with whatever else runs on the machine (torch's threads spin while they
  wait, so even CPU time grows): read them as orders of magnitude. ONNX rows/s: the
  exported graph alone in onnxruntime, one thread, batches of 1024 rows, best of 3 passes
  over the test day.
"""


def write_markdown(
    path: Path, inputs: Inputs, plots: Sequence[str], notes: str, build_seconds: float | None
) -> None:
    """reports/evaluation.md."""
    ref = inputs.references.get("per_video_median", {})
    lines = [
        "# Watch-time models on KuaiRand: evaluation",
        "",
        "Generated by `python -m model_export report` (run by `make models` too); do not edit",
        "by hand. Figures: `evaluation.json`. EGMN's own variants: [egmn.md](egmn.md).",
        "",
        inputs.window_text,
        "",
        f"## Test day {inputs.test_date} ({inputs.y.size} impressions)",
        "",
        headline_table(inputs.models),
        "",
    ]
    if ref:
        lines += [
            f"Reference without a model, the per-video median of the training days: MAE "
            f"{ref['mae_point']:.3f} s, XAUC {ref['xauc_point']:.4f}.",
            "",
        ]
    lines += ["### Who wins each column", "", *verdicts(inputs.models), ""]
    lines += ["## By video duration", ""]
    titles = {
        "mae_point": "MAE of point_s (s)",
        "xauc_point": "XAUC of point_s (within the group)",
        "nll_positive": "NLL y>0",
        "crps": "CRPS (s)",
        "quick_skip_auc": "quick-skip AUC",
    }
    for key in GROUP_COLUMNS:
        lines += [f"### {titles[key]}", "", group_table(inputs.models, key), ""]
    lines += [
        "## NLL y>0 by watch time",
        "",
        "Mean -log density over the test rows whose label falls in each range (the share of",
        "rows is in the header): where each model gains or loses its likelihood.",
        "",
        label_table(inputs.models, inputs.y),
        "",
    ]
    captions = {
        "evaluation_distributions.png": "Observed vs predicted watch-time distribution per "
        "duration group: mass per decade of watch time on a log axis, the prediction being the "
        "average over the group's rows of each model's mass in each bin. The first bin, "
        "[0, 0.25 s), holds the labels at exactly 0 s and is left out of the axis; each "
        "title gives its observed share.",
        "evaluation_reliability.png": "Reliability of the quantiles: for q = 0.05..0.95, the "
        "share of test labels at or below the predicted q-quantile.",
        "evaluation_egmn_mixture.png": "EGMN's mixture masses over video duration: the atom, "
        "the exponential, and the Gaussians pooled by where their mean sits relative to the "
        "video's duration.",
    }
    lines += ["## Plots", ""]
    for name in plots:
        lines += [f"![{name}]({name})", "", captions.get(name, ""), ""]
    lines += ["## How the comparison is kept fair", "", inputs.fairness_text]
    lines += ["## The models", "", MODELS_TEXT]
    lines += ["## Metrics", "", METRICS_TEXT, "## What was tried, and what it says", "", notes]
    if build_seconds is not None:
        lines += ["", f"Whole `make models` build: {build_seconds:.0f} s."]
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


NOTES = """\
The quality bar asked of EGMN (best on NLL and CRPS, at least as good as every baseline on
MAE and XAUC, not worse than the best baseline on quick-skip AUC) is **not met** on this
test day, and the table says where. The EGMN row is the served `models/egmn/2` (the paper's
loss with a halved L1 weight, chosen on the validation day: `reports/tuning.md`); the
paper's settings (`models/egmn/1`) scored MAE 18.997 s, XAUC 0.6688, NLL y>0 3.740, CRPS
14.213 s and skip AUC 0.7324 here, so version 2 is better on every one of those columns.

- **D2Q wins both point columns** (MAE 18.845 vs 18.966 s, XAUC 0.6739 vs 0.6694), and
  does so in most duration groups. Predicting the quantile level within a duration group and
  mapping it back through that group's quantile function is a strong median-like, ranking-
  oriented estimator on logs where duration explains much of the watch time. EGMN's point
  still beats every other baseline (their points are means, which MAE punishes on labels
  this skewed) and the per-video median.
- **Softmax (20 log-spaced buckets) wins NLL y>0, CRPS, quick-skip AUC and Brier**
  (3.576 vs 3.716; 14.002 vs 14.160 s; 0.7344 vs 0.7343, a tie at this precision; 0.1953
  vs 0.1987), in every duration group on NLL y>0 and in all but two (30-60 s, >= 300 s) on
  CRPS. It is not an artefact of the atom: on labels in (0, 0.5 s], where a histogram's
  first bucket could borrow the mass of the 0 s labels, softmax is worse than EGMN; it wins
  in every range above 0.5 s. The distribution plot shows why: the full-view peak at the
  video's duration is sharp, and 20 buckets 1.47x wide follow it more closely than EGMN's
  truncated Gaussians do.
- CREAD wins the MAE of the median (18.869 vs 18.922 s); EGMN is ahead of it on NLL y>0
  and CRPS (3.716 vs 3.736; 14.160 vs 14.202 s).
- EGMN is the best calibrated model: its 10/50/90% quantiles cover 9.8/49.2/90.0% of the
  labels; no baseline is within 0.03 of all three levels (softmax 16.9/53.4/89.7%, VR
  9.6/68.0/92.7%), and the reliability plot shows the same over all levels.

What was tried, within the rules (no test-day tuning, no baseline weakened):

- The likelihood column was checked for fairness before reading anything into it: NLL y>0
  scores every family by a density on the same rows, and the breakdown by watch time above
  shows the baselines' lead does not come from the labels near 0 s.
- A diagnostic on the **validation day** only: EGMN retrained without its L1 point term
  (beta = 0, uncalibrated) reaches NLL y>0 3.634 and CRPS 13.54 s there, against 3.675 /
  13.79 s with the paper's beta = 1 and 3.570 / 13.49 s for softmax, but its point gets much
  worse (validation MAE 19.96 vs 18.54 s).
- Four EGMN configurations tuned on the validation day (`reports/tuning.md`): L1 weight 0.5,
  entropy weight 0.01, 16 Gaussians, and the three together, with a selection rule fixed
  before any figure was seen (lowest CRPS among those within 1% of the shipped MAE, shipped
  only if CRPS and NLL y>0 both improve). Beta 0.5 won and is served as version 2; none of
  the four reached softmax's validation NLL y>0 or CRPS. The baselines got no search.
- EGMN's calibration (fitted on the validation day) trades likelihood for coverage: on the
  validation day's second half every tuned network scores a better NLL y>0 uncalibrated.
- Early stopping watches each model's own loss on the validation day: the baselines' best
  epochs are the 1st to the 3rd (their validation loss rises after that), EGMN's the 6th.

Closing the rest of the gap would mean changing EGMN's shape (narrower components near the
duration peak, an atom-aware calibration), not its loss weights.
"""


def window_text(split: Split) -> str:
    """The days behind every figure."""
    return (
        f"Training days {split.train_dates[0]}-{split.train_dates[-1]} ({len(split.train)} "
        f"rows), validation day {split.validation_date} ({len(split.validation)} rows), test "
        f"day {split.test_date} ({len(split.test)} rows, every figure below)."
    )


def score_d2q(run: BaselineRun, split: Split) -> Scored:
    """D2Q's point predictions on the test day (torch; it has no exported graph)."""
    enc = encode(run.fitted, split.test)
    point = d2q_point(run, enc, split.test["duration_ms"].to_numpy(dtype=np.float64))
    return Scored(
        name="d2q",
        family=None,
        dist=None,
        point=point,
        train_seconds=run.seconds,
        train_cpu_seconds=run.cpu_seconds,
        description="Duration-deconfounded quantile regression (offline only)",
    )


def served_dir(models_dir: Path, name: str) -> Path | None:
    """The directory a bare model name serves: its highest numeric version (the service's rule)."""
    return highest_version_dir(models_dir / name)


def collect(
    models_dir: Path,
    split: Split,
    d2q: BaselineRun | None,
    names: Sequence[str] = REPORT_ORDER,
    measure_speed: bool = True,
) -> Inputs:
    """Score each model's served directory (``models_dir/<name>/<highest version>``) and D2Q."""
    test = split.test
    y = labels(test)
    duration = test["duration_ms"].to_numpy(dtype=np.float64)
    group = duration_group(duration)
    models: list[Scored] = []
    for name in names:
        if name == "d2q":
            if d2q is not None:
                models.append(score_d2q(d2q, split))
            continue
        model_dir = served_dir(models_dir, name)
        if model_dir is not None and (model_dir / "manifest.json").exists():
            models.append(score_exported(model_dir, test, measure_speed=measure_speed))
    for m in models:
        score(m, y, group)
    reference = evaluate_point(per_video_median(split.train, test), y)
    fairness = FAIRNESS.format(
        train=f"{split.train_dates[0]}-{split.train_dates[-1]}",
        val=split.validation_date,
        test=split.test_date,
    )
    return Inputs(
        models=models,
        y=y,
        group=group,
        duration_ms=duration,
        test_date=split.test_date,
        references={"per_video_median": reference},
        window_text=window_text(split),
        fairness_text=fairness,
    )


def write_report(
    reports_dir: Path,
    inputs: Inputs,
    models_dir: Path,
    notes: str = NOTES,
    build_seconds: float | None = None,
) -> Path:
    """evaluation.md, evaluation.json and the plots; returns the markdown path."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    egmn_params = None
    egmn_dir = served_dir(models_dir, "egmn")
    egmn = next((m for m in inputs.models if m.name == "egmn" and m.dist is not None), None)
    if egmn is not None and egmn.dist is not None and egmn_dir is not None:
        egmn_params = egmn.dist.params()
    plots = write_plots(reports_dir, inputs, egmn_params)
    write_json(reports_dir / "evaluation.json", inputs)
    path = reports_dir / "evaluation.md"
    write_markdown(path, inputs, plots, notes, build_seconds)
    return path
