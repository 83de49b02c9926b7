"""Every model side by side on the test day: a model directory scored through the serving
path (or a baseline from its run, when it has no directory), and the figures overall, by
video duration and by label range.

Nothing here is fitted: the test day is only scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from model_export.data.kuairand import Split, raw_columns
from model_export.data.prepared import encode
from model_export.evaluation.metrics import (
    coverage,
    crps,
    evaluate_distribution,
    evaluate_point,
    mae,
    roc_auc,
    xauc,
)
from model_export.evaluation.served import load_served, served_distribution
from model_export.training.baselines import BaselineRun, baseline_distribution
from service.distributions import Distribution
from service.runtime.model import SessionConfig

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
    onnx_mb: float | None = None
    description: str = ""
    overall: dict[str, float] = field(default_factory=dict)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    nll_by_label: dict[str, float] = field(default_factory=dict)
    seed_runs: dict[str, dict[str, object]] = field(default_factory=dict)
    """The same model trained with other seeds: seed -> figures (``reports/seeds.json``)."""


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
    session = load_served(model_dir, SessionConfig(intra_op_threads=1, inter_op_threads=1)).session
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


def score_exported(model_dir: Path, test: pd.DataFrame, label: str | None = None) -> Scored:
    """A model directory scored through the serving path."""
    model = load_served(model_dir)
    manifest = model.manifest
    columns = raw_columns(test, manifest.source_columns())
    dist = served_distribution(model, columns)
    return Scored(
        name=label or manifest.name,
        family=manifest.family,
        dist=dist,
        point=dist.point(),
        onnx_mb=(model_dir / "model.onnx").stat().st_size / 1e6,
        description=manifest.description,
    )


def score_d2q(run: BaselineRun, split: Split) -> Scored:
    """D2Q on the test day from its run (torch), for a report without its model directory."""
    dist = baseline_distribution(run, encode(run.fitted, split.test))
    return Scored(
        name="d2q",
        family=run.model.family,
        dist=dist,
        point=dist.point(),
        description="Duration-deconfounded quantile regression, served as a quantile function",
    )


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
