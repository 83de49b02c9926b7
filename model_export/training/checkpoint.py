"""One checkpoint format for every run, EGMN's and each baseline's: one writer, one reader.

A run directory (``runs/<name>/``, not committed) holds ``checkpoint.pt``: the training
config, the fitted feature specs, the training window, the network weights, the per-epoch
history and the figures, plus what the kind of run needs besides (EGMN: its calibration; a
baseline: its head's constants and D2Q's duration groups) and its timings. That is
everything ``export`` and the report need, without the data or a retraining.

The kind of a checkpoint is read from its config: a baseline's names its ``model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from model_export.data.features import FittedFeatures
from model_export.models.d2q import DurationGroups
from model_export.models.egmn import Calibration
from model_export.training.baselines import BaselineRun, build_model
from model_export.training.config import BaselineConfig, TrainConfig
from model_export.training.egmn import EGMNRun, build_egmn, duration_log_ms, input_names
from model_export.training.loop import History
from service.manifest import TrainingWindow

Run = EGMNRun | BaselineRun
R = TypeVar("R", EGMNRun, BaselineRun)

CHECKPOINT = "checkpoint.pt"
"""A run directory's checkpoint file."""


def _own_state(run: Run) -> dict[str, Any]:
    """What only this kind of run carries, and its timings."""
    if isinstance(run, EGMNRun):
        return {
            "calibration": None if run.calibration is None else run.calibration.state_dict(),
            "seconds": run.seconds,
            "train_seconds": run.train_seconds,
            "train_cpu_seconds": run.train_cpu_seconds,
        }
    return {
        "extras": run.model.extras(),
        "groups": None if run.groups is None else run.groups.state(),
        "seconds": run.seconds,
        "cpu_seconds": run.cpu_seconds,
    }


def save_run(run: Run, path: Path) -> None:
    """Everything export and the report need, in one torch checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    features = run.fitted.state()
    rest = {
        "config": run.config.as_dict(),
        "window": run.window.model_dump(mode="json"),
        "model": run.model.state_dict(),
        "metrics": run.metrics,
        "history": run.history.state(),
        **_own_state(run),
    }
    # One flat dict: a key of the feature state must not be overwritten by the run's own.
    clash = sorted(set(features) & set(rest))
    if clash:
        raise ValueError(f"checkpoint keys {clash} are written twice")
    torch.save({**features, **rest}, path)


def _egmn_run(ck: dict[str, Any], fitted: FittedFeatures) -> EGMNRun:
    config = TrainConfig(**_config_values(ck))
    model = build_egmn(
        fitted.cardinalities,
        fitted.numeric_width,
        config,
        input_names(fitted),
        duration_log_ms(fitted),
    )
    model.load_state_dict(ck["model"])
    model.eval()
    calibration = None
    if ck["calibration"] is not None:
        n_weights = config.n_gaussians + 1 + int(config.point_mass)
        calibration = Calibration(config.n_gaussians, n_weights)
        calibration.load_state_dict(ck["calibration"])
        calibration.eval()
    return EGMNRun(
        config=config,
        fitted=fitted,
        window=TrainingWindow.model_validate(ck["window"]),
        model=model,
        calibration=calibration,
        history=History.from_state(ck["history"]),
        metrics=ck["metrics"],
        seconds=float(ck["seconds"]),
        train_seconds=float(ck.get("train_seconds", 0.0)),
        train_cpu_seconds=float(ck.get("train_cpu_seconds", 0.0)),
    )


def _baseline_run(ck: dict[str, Any], fitted: FittedFeatures) -> BaselineRun:
    config = BaselineConfig(**_config_values(ck))
    state = ck["model"]
    # Head constants are buffers; CREAD's count sizes its head, so it comes from the state.
    thresholds = state["thresholds_s"].tolist() if "thresholds_s" in state else None
    groups = None if ck["groups"] is None else DurationGroups.from_state(ck["groups"])
    model = build_model(config, fitted, np.zeros(1), thresholds_s=thresholds, groups=groups)
    model.load_state_dict(state)
    model.eval()
    return BaselineRun(
        config=config,
        fitted=fitted,
        window=TrainingWindow.model_validate(ck["window"]),
        model=model,
        history=History.from_state(ck["history"]),
        groups=groups,
        metrics=ck["metrics"],
        seconds=float(ck["seconds"]),
        cpu_seconds=float(ck.get("cpu_seconds", 0.0)),
    )


def _config_values(ck: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(ck["config"])
    cfg["hidden"] = tuple(cfg["hidden"])
    return cfg


def load_run(path: Path, kind: type[R]) -> R:
    """Rebuild a run of the kind expected from its checkpoint (no data needed)."""
    ck = torch.load(path, weights_only=False)
    fitted = FittedFeatures.from_state(ck)
    run = _baseline_run(ck, fitted) if "model" in ck["config"] else _egmn_run(ck, fitted)
    if not isinstance(run, kind):
        raise TypeError(f"{path} holds a {type(run).__name__}, not a {kind.__name__}")
    return run
