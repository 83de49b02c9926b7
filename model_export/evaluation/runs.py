"""A trained run's test-day figures: what its manifest carries and its run prints.

Training (:mod:`model_export.training`) never reads the test day; these functions score it
once, after training and the validation-day post-fits, through the service's numpy family
of each model (the served distribution, not a torch re-implementation of it).
"""

from __future__ import annotations

import time

from model_export.data.prepared import Prepared
from model_export.evaluation.metrics import METRIC_NOTES, evaluate_distribution
from model_export.training.baselines import (
    BaselineRun,
    baseline_distribution,
    fit_baseline,
)
from model_export.training.config import BaselineConfig, TrainConfig
from model_export.training.egmn import EGMNRun, fit_egmn, predict_distribution
from service.manifest import Evaluation, TrainingWindow


def run_egmn(
    prepared: Prepared,
    config: TrainConfig,
    calibrate: bool = True,
    progress: bool = True,
    label: str = "egmn",
) -> EGMNRun:
    """Train, calibrate on the validation day and evaluate on the test day; ``label`` names
    the run in the progress lines."""
    start = time.perf_counter()
    run = fit_egmn(prepared, config, calibrate=calibrate, progress=progress, label=label)
    y = prepared.test.y.double().numpy()
    run.metrics["uncalibrated"] = evaluate_distribution(
        predict_distribution(run.serving(calibrated=False), prepared.test, run.config.point), y
    )
    if run.calibration is not None:
        run.metrics["calibrated"] = evaluate_distribution(
            predict_distribution(run.serving(calibrated=True), prepared.test, run.config.point),
            y,
        )
    run.seconds = time.perf_counter() - start
    return run


def served_metrics(run: EGMNRun) -> dict[str, float]:
    """The figures of the distribution the model directory serves."""
    return run.metrics.get("calibrated", run.metrics["uncalibrated"])


def run_baseline(prepared: Prepared, config: BaselineConfig, progress: bool = True) -> BaselineRun:
    """Fit head constants and network, post-fit on the validation day, score the test day."""
    run = fit_baseline(prepared, config, progress=progress)
    run.metrics = evaluate_run(run, prepared)
    return run


def evaluate_run(run: BaselineRun, prepared: Prepared) -> dict[str, float]:
    """Test-day figures of a run, through its served family."""
    y = prepared.test.y.double().numpy()
    return evaluate_distribution(baseline_distribution(run, prepared.test), y)


def manifest_evaluation(
    window: TrainingWindow, metrics: dict[str, float], references: dict[str, dict[str, float]]
) -> Evaluation:
    """The manifest's evaluation block: the test day's figures, references and definitions."""
    return Evaluation(
        split="test",
        date=window.test_date,
        rows=window.rows_test,
        metrics=metrics,
        references=references,
        notes=dict(METRIC_NOTES),
    )
