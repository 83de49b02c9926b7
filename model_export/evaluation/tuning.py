"""EGMN tuning on the validation day only: the configurations' runs and their scoring.

Each named configuration (``model_export.training.config.EGMN_CONFIGS``) is trained on the
training days, calibrated on the first half of the validation day and scored on the second;
the shipped models and the served configuration's seed runs are scored on the same rows.
The protocol, the selection rules and the report they write are in
:mod:`model_export.evaluation.tuning_report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_export.data.kuairand import Split, labels, raw_columns
from model_export.data.prepared import Encoded, Prepared, encode
from model_export.evaluation.metrics import evaluate_distribution, evaluate_point, mae, xauc
from model_export.evaluation.served import load_served, served_distribution
from model_export.training.baselines import BaselineRun, baseline_distribution
from model_export.training.checkpoint import CHECKPOINT, load_run, save_run
from model_export.training.config import EGMN_CONFIGS, SERVED_CONFIG, TrainConfig, named_config
from model_export.training.egmn import EGMNRun, fit_calibration, fit_egmn, predict_distribution
from service.distributions import EGM
from service.versions import version_dirs

# The shipped EGMN is TrainConfig() (alpha 0.1, beta 1.0, K 10, lr 2e-3, patience 2); the
# configurations tried against it live, without torch, in model_export.training.config.
CONFIGS: dict[str, dict[str, Any]] = EGMN_CONFIGS


def config_of(name: str) -> TrainConfig:
    """The TrainConfig of a named configuration (one thread: the machine is shared)."""
    if name not in CONFIGS:
        raise KeyError(name)
    return named_config(name)


def halves(n: int) -> tuple[slice, slice]:
    """First half (fits calibration) and second half (scores) of the validation rows."""
    return slice(0, n // 2), slice(n // 2, n)


def _part(data: Encoded, rows: slice) -> Encoded:
    return Encoded(data.categorical[rows], data.numeric[rows], data.y[rows])


def run_config(
    prepared: Prepared, name: str, out_dir: Path, progress: bool = False
) -> dict[str, Any]:
    """Train one configuration, calibrate on the first half, score the second half."""
    config = config_of(name)
    first, second = halves(len(prepared.validation))
    run = fit_egmn(
        prepared,
        config,
        progress=progress,
        calibration_rows=_part(prepared.validation, first),
        label=f"egmn {name}",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    save_run(run, out_dir / name / CHECKPOINT)
    scored = _part(prepared.validation, second)
    y = scored.y.double().numpy()
    calibrated = predict_distribution(run.serving(calibrated=True), scored)
    result = {
        "name": name,
        "changes": CONFIGS[name],
        "best_epoch": run.history.best_epoch + 1,
        "validation_nll_scaled": run.history.validation_nll,
        "train_seconds": run.train_seconds,
        "train_cpu_seconds": run.train_cpu_seconds,
        "uncalibrated": evaluate_distribution(
            predict_distribution(run.serving(calibrated=False), scored), y
        ),
        "calibrated": evaluate_distribution(calibrated, y),
        "point_options": point_options(calibrated, y),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    return result


def point_options(dist: EGM, y: np.ndarray) -> dict[str, dict[str, float]]:
    """MAE and XAUC of each candidate point_s (lever 4): the paper's eq. 12, the median, the
    separate head when the model has one, and the exact mean for reference."""
    points = {"eq12": dist.paper_point(), "median": dist.icdf(0.5), "mean": dist.mean()}
    if "point" in dist.params():
        points["head"] = dist.point()
    return {
        k: {"mae": mae(np.ravel(p), y), "xauc": xauc(np.ravel(p), y)} for k, p in points.items()
    }


def _score_dir(version: Path, split: Split) -> dict[str, float]:
    """Second-half validation figures of one exported model directory."""
    _, second = halves(len(split.validation))
    part = split.validation.iloc[second]
    model = load_served(version)
    columns = raw_columns(part, model.manifest.source_columns())
    dist = served_distribution(model, columns)
    return evaluate_distribution(dist, labels(part), model.manifest.quick_skip_threshold_s)


def score_seeds(models_dir: Path, seeds_dir: Path, split: Split) -> list[dict[str, float]]:
    """The served configuration's seeds on the second half: `egmn/2` (seed 0) and the seed
    runs of ``python -m model_export seeds`` (``<seeds_dir>/<seed>/egmn/1``)."""
    dirs = [models_dir / "egmn" / "2", *sorted(seeds_dir.glob("*/egmn/1"))]
    return [_score_dir(d, split) for d in dirs]


def score_shipped(models_dir: Path, split: Split) -> dict[str, dict[str, float]]:
    """Second-half validation figures of every shipped model directory (highest version)."""
    _, second = halves(len(split.validation))
    part = split.validation.iloc[second]
    y = labels(part)
    out: dict[str, dict[str, float]] = {}
    for model_dir in sorted(models_dir.iterdir()):
        for version in version_dirs(model_dir):
            model = load_served(version)
            history = model.manifest.history
            if history is not None and history.cutoff_date >= split.validation_date:
                # Its frozen tables hold the validation day's own labels: no fair figure.
                print(f"not scored: {version} reads history up to {history.cutoff_date}")
                continue
            columns = raw_columns(part, model.manifest.source_columns())
            dist = served_distribution(model, columns)
            out[f"{model_dir.name}/{version.name}"] = evaluate_distribution(
                dist, y, model.manifest.quick_skip_threshold_s
            )
    return out


def load_results(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Every finished configuration's JSON."""
    return {
        p.stem: json.loads(p.read_text())
        for p in sorted(out_dir.glob("*.json"))
        if p.stem in CONFIGS
    }


def set_threads() -> None:
    """One thread for torch (the machine has two cores, shared)."""
    torch.set_num_threads(1)


def score_d2q_validation(run_path: Path, prepared_split: Split) -> dict[str, float]:
    """D2Q's point figures on the second half of the validation day."""
    run = load_run(run_path, BaselineRun)
    _, second = halves(len(prepared_split.validation))
    part = prepared_split.validation.iloc[second].reset_index(drop=True)
    point = baseline_distribution(run, encode(run.fitted, part)).point()
    return evaluate_point(point, labels(part))


# The configuration the rule chose on the validation day, served as models/egmn/2.
SERVED = SERVED_CONFIG


def finish(prepared: Prepared, run: EGMNRun) -> EGMNRun:
    """A tuned network made into a served model the way ``run_egmn`` makes one.

    The calibration is refitted on the whole validation day (the tuning fitted it on the first
    half only, to score the second), then the test day is scored for the manifest.
    """
    run.calibration = fit_calibration(run.model, prepared.validation, run.config)
    y = prepared.test.y.double().numpy()
    for key, calibrated in (("uncalibrated", False), ("calibrated", True)):
        dist = predict_distribution(
            run.serving(calibrated=calibrated), prepared.test, run.config.point
        )
        run.metrics[key] = evaluate_distribution(dist, y)
    return run
