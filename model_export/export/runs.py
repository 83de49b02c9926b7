"""A trained run's model directory: EGMN's and each served baseline's manifest content.

The caller hands in the manifest's evaluation block (the test day's figures come from
:mod:`model_export.evaluation.runs`); everything else a manifest says about a run (its
description, its training settings, its head's constants) is written here. Timings are not:
they differ between two builds of the same model, and a rebuild must leave the manifest as it
was (they go to ``runs/costs.json``, :mod:`model_export.evaluation.costs`).
"""

from __future__ import annotations

from pathlib import Path

from model_export.export.model_dir import write_model_dir
from model_export.training.baselines import BaselineRun
from model_export.training.config import TrainConfig
from model_export.training.egmn import EGMNRun
from service.manifest import Evaluation, Manifest

BASELINE_DESCRIPTIONS = {
    "vr": "Value regression (MSE) served as a normal censored at 0, spread fitted on validation",
    "wlr": "Weighted logistic regression; odds = expected watch time, served as an exponential",
    "ziln": "Zero-inflated lognormal likelihood (atom at 0 + lognormal)",
    "softmax": "Bucket classification over exponentially growing buckets, served as a histogram",
    "cread": "CREAD: ordinal thresholds at error-adaptive split points, served as a survival curve",
    "d2q": "D2Q: pinball quantiles of the level within the duration group, mapped back to "
    "seconds through the group's quantile function; served as a quantile function",
    "huber": "Huber regression; spread fitted on validation (family in extras)",
    "huberpp": "Huber regression of the relative error; spread fitted on validation",
    "am": "Asymmetric squared loss on log(1 + seconds); spread fitted on validation",
    "distill_softmax": "Softmax buckets trained on mean-preserving soft labels; a histogram",
    "tpm": "TPM: binary tree of classifiers over quantile leaves, served as a histogram",
    "d2co": "D2Co: interest on watch time corrected for duration bias and noise (per-duration "
    "GMM), mapped back to seconds; normal censored at 0, spread fitted on validation",
    "cwm": "Counterfactual watch model: exit where the rising cost of watching meets the "
    "relevance, censored at the video's end; the exit time's survival curve",
    "lda": "Label-distribution anchors: per-duration watch-ratio anchors weighted per row "
    "(Sinkhorn-aligned), mapped to seconds by the row's duration; histogram + regressed point",
    "gr": "Generative regression: a Transformer decoder writes the watch time as 3 hierarchical "
    "quantile tokens (curriculum embedding mixup); histogram over the first two steps, "
    "windowed soft-argmax point",
}


def _egmn_extras(run: EGMNRun) -> dict[str, float | str | list[float]]:
    extras: dict[str, float | str | list[float]] = {
        "label_scale_s": run.config.label_scale,
        "n_gaussians": float(run.config.n_gaussians),
        "point_mass": "yes" if run.config.point_mass else "no",
        "calibrated": "yes" if run.calibration is not None else "no",
        "best_epoch": float(run.history.best_epoch + 1),
        "train_config": repr(run.config.as_dict()),
    }
    if run.calibration is not None:
        extras.update(run.calibration.summary())
    return extras


def write_egmn(run: EGMNRun, out: Path, version: str, evaluation: Evaluation) -> Manifest:
    """EGMN's model directory: the calibrated network, its EGM family and its settings."""
    return write_model_dir(
        out,
        run.serving(calibrated=True),
        run.fitted,
        name="egmn",
        version=version,
        window=run.window,
        evaluation=evaluation,
        extras=_egmn_extras(run),
        description=egmn_description(run.config, calibrated=run.calibration is not None),
        point=run.config.point,
    )


def egmn_description(config: TrainConfig, calibrated: bool) -> str:
    """EGMN's manifest description, from its settings alone (so that a manifest written
    before the wording changed can be brought up to date without retraining)."""
    return (
        f"EGMN: exponential + {config.n_gaussians} truncated Gaussians"
        + (" (the last one at the video's duration)" if config.duration_anchor else "")
        + (" + point mass at 0" if config.point_mass else "")
        + (", calibrated on the validation day" if calibrated else "")
        + f"; loss NLL + {config.alpha:g} * sum(w log w) + {config.beta:g} * L1"
        + (" of a separate point head" if config.point_head else "")
        + ("; point_s is the median" if config.point == "median" else "")
    )


def write_baseline(run: BaselineRun, out: Path, version: str, evaluation: Evaluation) -> Manifest:
    """A served baseline's model directory; its manifest names its own family."""
    family = run.model.family
    if family is None:
        raise ValueError(f"{run.name} is evaluated offline only; it has no served family")
    extras: dict[str, float | str | list[float]] = {
        "label_scale_s": run.config.label_scale,
        "best_epoch": float(run.history.best_epoch + 1),
        "train_config": repr(run.config.as_dict()),
        **run.model.extras(),
    }
    return write_model_dir(
        out,
        run.serving(),
        run.fitted,
        name=run.name,
        version=version,
        window=run.window,
        evaluation=evaluation,
        extras=extras,
        description=BASELINE_DESCRIPTIONS[run.name],
        family=family,
    )
