"""EGMN end to end on the KuaiRand slice: load, fit features, train, calibrate, evaluate, save.

A run directory (``runs/<name>/``, not committed) holds ``checkpoint.pt``: the network and
calibration weights, the training config, the fitted feature specs and the metrics, which is
everything ``export`` needs to write the model directory without retraining.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from model_export.baselines import per_video_median
from model_export.data import (
    DEFAULT_DATA_DIR,
    Split,
    labels,
    load_joined,
    raw_columns,
    split_by_day,
)
from model_export.egmn import EGMN, Calibration, ServingEGMN
from model_export.features import FittedFeatures, fit_features
from model_export.metrics import METRIC_NOTES, evaluate_distribution, evaluate_point
from model_export.train import Encoded, History, TrainConfig, fit_calibration, train_egmn
from service.distributions import EGM
from service.manifest import TrainingWindow
from service.runtime.features import encode_columns, required_columns


@dataclass
class Prepared:
    """The split, its fitted features and the encoded tensors of each day range."""

    split: Split
    fitted: FittedFeatures
    train: Encoded
    validation: Encoded
    test: Encoded


@dataclass
class EGMNRun:
    """A trained (and calibrated) EGMN with its figures."""

    config: TrainConfig
    fitted: FittedFeatures
    window: TrainingWindow
    model: EGMN
    calibration: Calibration | None
    history: History
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    # Training and calibration only (no evaluation): wall time, and CPU time of the process,
    # which a second job on the same cores inflates far less than wall time.
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0

    def serving(self, calibrated: bool = True) -> ServingEGMN:
        """The exported module: network, calibration (optional) and the unit conversion."""
        cal = self.calibration if calibrated else None
        return ServingEGMN(self.model, cal, self.config.label_scale).eval()


def encode(fitted: FittedFeatures, df: pd.DataFrame) -> Encoded:
    """Model tensors of a frame through the shared service encoder (one implementation)."""
    cols = raw_columns(df, required_columns(fitted.features))
    return Encoded.from_numpy(encode_columns(fitted.features, fitted.inputs, cols), labels(df))


def prepare(data_dir: Path = DEFAULT_DATA_DIR) -> Prepared:
    """Load, split by day, fit the feature schema on the training days and encode every day."""
    split = split_by_day(load_joined(data_dir))
    fitted = fit_features(split.train)
    return Prepared(
        split=split,
        fitted=fitted,
        train=encode(fitted, split.train),
        validation=encode(fitted, split.validation),
        test=encode(fitted, split.test),
    )


def training_window(split: Split) -> TrainingWindow:
    """The days behind a model, for its manifest."""
    return TrainingWindow(
        train_dates=split.train_dates,
        validation_date=split.validation_date,
        test_date=split.test_date,
        rows_train=len(split.train),
        rows_validation=len(split.validation),
        rows_test=len(split.test),
    )


@torch.no_grad()
def predict_distribution(serving: ServingEGMN, data: Encoded) -> EGM:
    """The served distribution of every row, through the service's numpy EGM."""
    outs = serving(data.categorical, data.numeric)
    params = {
        name: out.double().numpy() for name, out in zip(serving.output_names(), outs, strict=True)
    }
    return EGM.from_params(params)


def baseline_metrics(prepared: Prepared) -> dict[str, float]:
    """MAE and XAUC of the per-video training median on the test day."""
    pred = per_video_median(prepared.split.train, prepared.split.test)
    return evaluate_point(pred, labels(prepared.split.test))


def train_on(prepared: Prepared, config: TrainConfig, progress: bool) -> tuple[EGMN, History]:
    """EGMN fitted on the training days, early-stopped on the validation day."""
    return train_egmn(
        prepared.train,
        prepared.validation,
        prepared.fitted.cardinalities,
        prepared.fitted.numeric_width,
        config,
        progress=progress,
    )


def run_egmn(
    prepared: Prepared, config: TrainConfig, calibrate: bool = True, progress: bool = True
) -> EGMNRun:
    """Train, calibrate on the validation day and evaluate on the test day."""
    start, cpu_start = time.perf_counter(), time.process_time()
    model, history = train_on(prepared, config, progress)
    calibration = fit_calibration(model, prepared.validation, config) if calibrate else None
    train_seconds = time.perf_counter() - start
    train_cpu_seconds = time.process_time() - cpu_start
    run = EGMNRun(
        config=config,
        fitted=prepared.fitted,
        window=training_window(prepared.split),
        model=model,
        calibration=calibration,
        history=history,
        train_seconds=train_seconds,
        train_cpu_seconds=train_cpu_seconds,
    )
    y = prepared.test.y.double().numpy()
    run.metrics["uncalibrated"] = evaluate_distribution(
        predict_distribution(run.serving(calibrated=False), prepared.test), y
    )
    if calibration is not None:
        run.metrics["calibrated"] = evaluate_distribution(
            predict_distribution(run.serving(calibrated=True), prepared.test), y
        )
    run.seconds = time.perf_counter() - start
    return run


def served_metrics(run: EGMNRun) -> dict[str, float]:
    """The figures of the distribution the model directory serves."""
    return run.metrics.get("calibrated", run.metrics["uncalibrated"])


def save_run(run: EGMNRun, path: Path) -> None:
    """Everything export needs, in one torch checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "config": run.config.as_dict(),
            **run.fitted.state(),
            "window": run.window.model_dump(mode="json"),
            "model": run.model.state_dict(),
            "calibration": None if run.calibration is None else run.calibration.state_dict(),
            "metrics": run.metrics,
            "history": {
                "train_loss": run.history.train_loss,
                "validation_nll": run.history.validation_nll,
                "best_epoch": run.history.best_epoch,
            },
            "seconds": run.seconds,
            "train_seconds": run.train_seconds,
            "train_cpu_seconds": run.train_cpu_seconds,
        },
        path,
    )


def load_run(path: Path) -> EGMNRun:
    """Rebuild a run from its checkpoint (no data needed)."""
    ck = torch.load(path, weights_only=False)
    cfg = dict(ck["config"])
    cfg["hidden"] = tuple(cfg["hidden"])
    config = TrainConfig(**cfg)
    fitted = FittedFeatures.from_state(ck)
    model = EGMN(
        fitted.cardinalities,
        fitted.numeric_width,
        n_gaussians=config.n_gaussians,
        embedding_dim=config.embedding_dim,
        hidden=config.hidden,
        dropout=config.dropout,
        point_mass=config.point_mass,
    )
    model.load_state_dict(ck["model"])
    model.eval()
    calibration = None
    if ck["calibration"] is not None:
        n_weights = config.n_gaussians + 1 + int(config.point_mass)
        calibration = Calibration(config.n_gaussians, n_weights)
        calibration.load_state_dict(ck["calibration"])
        calibration.eval()
    hist = ck["history"]
    return EGMNRun(
        config=config,
        fitted=fitted,
        window=TrainingWindow.model_validate(ck["window"]),
        model=model,
        calibration=calibration,
        history=History(hist["train_loss"], hist["validation_nll"], hist["best_epoch"]),
        metrics=ck["metrics"],
        seconds=float(ck["seconds"]),
        train_seconds=float(ck.get("train_seconds", 0.0)),
        train_cpu_seconds=float(ck.get("train_cpu_seconds", 0.0)),
    )


def metric_notes() -> dict[str, str]:
    """Definitions stored with the numbers."""
    return dict(METRIC_NOTES)
