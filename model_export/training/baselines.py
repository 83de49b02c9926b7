"""Training and post-fitting of the baselines: a trained run, before its test-day figures.

Honesty rules, enforced here rather than promised in the report:
- Same inputs: the :class:`model_export.data.prepared.Prepared` tensors EGMN trains on (features
  fitted on the training days only), same trunk (:class:`model_export.models.backbone.Trunk`
  wraps EGMN's MLP backbone), same label scale.
- Same optimisation budget: :class:`BaselineConfig`'s shared fields default to EGMN's
  :class:`model_export.training.config.TrainConfig` values (a test holds them equal): Adam, lr 2e-3,
  batch 2048, at most 12 epochs, patience 2, embedding L2 1e-6, seed 0.
- Same selection: early stopping on the validation day's value of each model's own
  objective, best epoch restored; the only other use of the validation day is the spread
  of ``vr`` and of the point regressors (``huber``, ``huberpp``, ``am``). Head constants
  (bucket edges, CREAD's split points, TPM's leaves, GR's token vocabulary, D2Q's duration
  groups) come from the training days' labels and durations.
- No tuning on the test day: each baseline has one configuration, the papers' defaults
  where they give one, fixed before any test figure was seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from model_export.data.features import FittedFeatures
from model_export.data.prepared import Encoded, Prepared, training_window
from model_export.models.baseline import BaselineModel, ServingBaseline
from model_export.models.cread import CREAD, cread_thresholds
from model_export.models.d2q import DurationGroups, DurationQuantile
from model_export.models.distill import DistilledBucketSoftmax
from model_export.models.duration import DurationHead, DurationInput
from model_export.models.gr import GenerativeRegression, gr_vocabulary
from model_export.models.point import PointRegression
from model_export.models.registry import BASELINES
from model_export.models.softmax import BucketSoftmax, exponential_bucket_edges
from model_export.models.tpm import TreeProgressive, tpm_edges
from model_export.models.vr import ValueRegression, fit_normal_scale
from model_export.training.config import BaselineConfig, check_inputs
from model_export.training.loop import (
    History,
    fit_early_stopping,
    predict_batches,
    seed_everything,
    served_params,
)
from service.distributions import Distribution, get_family
from service.manifest import NumericFeature, TrainingWindow
from service.runtime.features import encode_numeric


def d2q_inputs(fitted: FittedFeatures, groups: DurationGroups) -> dict[str, object]:
    """What D2Q's graph needs to find a row's duration group: the encoded ``duration_ms``
    column and its missing indicator in the numeric tensor, and the cuts encoded exactly as
    the service encodes a duration (then float32, as the tensor carries them)."""
    spec = next(f for f in fitted.features if f.name == "duration_ms")
    assert isinstance(spec, NumericFeature)
    columns = fitted.inputs[1].columns
    z, _ = encode_numeric(spec, groups.cuts)
    return {
        "table": groups.table(),
        "cuts_z": z.astype(np.float32).tolist(),
        "duration_column": columns.index(spec.name),
        "missing_column": columns.index(spec.indicator_name) if spec.missing_indicator else None,
    }


def build_model(
    config: BaselineConfig,
    fitted: FittedFeatures,
    train_y: np.ndarray,
    thresholds_s: list[float] | None = None,
    groups: DurationGroups | None = None,
) -> BaselineModel:
    """The untrained baseline, its head constants fitted on the training labels.

    ``thresholds_s`` overrides CREAD's split points (a checkpoint carries its own); D2Q needs
    its duration ``groups`` (fitted on the training days, or a checkpoint's).
    """
    if config.model not in BASELINES:
        raise ValueError(f"unknown baseline {config.model!r}; known: {sorted(BASELINES)}")
    common: dict[str, object] = {
        "label_scale": config.label_scale,
        "embedding_dim": config.embedding_dim,
        "hidden": config.hidden,
        "dropout": config.dropout,
    }
    cards, width = fitted.cardinalities, fitted.numeric_width
    if config.model in ("softmax", "distill_softmax"):
        edges = exponential_bucket_edges(
            config.n_buckets, config.bucket_first_s, config.bucket_top_s
        )
        cls = DistilledBucketSoftmax if config.model == "distill_softmax" else BucketSoftmax
        return cls(cards, width, edges_s=edges, **common)
    if config.model == "tpm":
        return TreeProgressive(cards, width, edges_s=tpm_edges(train_y), **common)
    if config.model == "gr":
        leaves, buckets = gr_vocabulary(train_y, config.gr_tokens)
        return GenerativeRegression(
            cards,
            width,
            leaf_edges_s=leaves,
            bucket_edges_s=buckets,
            tokens=config.gr_tokens,
            d_model=config.gr_d_model,
            n_layers=config.gr_layers,
            **common,
        )
    if config.model == "cread":
        thr = thresholds_s or cread_thresholds(train_y, config.n_thresholds, config.cread_alpha)
        return CREAD(
            cards,
            width,
            thresholds_s=thr,
            monotone_weight=config.monotone_weight,
            huber_weight=config.huber_weight,
            huber_delta=config.huber_delta,
            **common,
        )
    if config.model == "d2q":
        if groups is None:
            raise ValueError("d2q needs its duration groups")
        return DurationQuantile(cards, width, **d2q_inputs(fitted, groups), **common)  # type: ignore[arg-type]
    head = BASELINES[config.model]
    if issubclass(head, DurationHead):
        duration = DurationInput.from_fitted(fitted)
        return head(cards, width, duration=duration, **common)  # type: ignore[arg-type]
    return BASELINES[config.model](cards, width, **common)


def predict_raw(model: BaselineModel, data: Encoded, batch_size: int = 8192) -> torch.Tensor:
    """Raw head outputs of every row (eval mode)."""
    return torch.cat(predict_batches(model, data, batch_size))


def train_baseline(
    model: BaselineModel,
    train: Encoded,
    validation: Encoded,
    y_train: torch.Tensor,
    y_validation: torch.Tensor,
    config: BaselineConfig,
    progress: bool = True,
) -> History:
    """Adam with early stopping on the validation loss; restores the best epoch in place.

    ``y_*`` are the targets the loss takes (scaled watch time, or D2Q's levels). The loop is
    EGMN's (same batches, same stopping rule), with the model's own loss.
    """
    seed_everything(config.seed, config.num_threads)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return model.loss(model(train.categorical[idx], train.numeric[idx]), y_train[idx])

    def validate() -> float:
        with torch.no_grad():
            return float(model.validation_loss(predict_raw(model, validation), y_validation))

    history = fit_early_stopping(
        model,
        len(train),
        train.categorical,
        batch_loss,
        validate,
        config,
        label=model.name,
        progress=progress,
        stop_on_nonfinite=True,
    )
    return history


@dataclass
class BaselineRun:
    """A trained baseline with its figures."""

    config: BaselineConfig
    fitted: FittedFeatures
    window: TrainingWindow
    model: BaselineModel
    history: History
    groups: DurationGroups | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    # Training and post-fitting, without the evaluation: wall and process CPU time.
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def name(self) -> str:
        """The baseline's name (``vr``, ``wlr``, ...)."""
        return self.config.model

    def serving(self) -> ServingBaseline:
        """The exported module."""
        return ServingBaseline(self.model).eval()


def baseline_distribution(run: BaselineRun, data: Encoded) -> Distribution:
    """The served distribution of every row, through the service's numpy family."""
    if run.model.family is None:
        raise ValueError(f"{run.name} has no served distribution")
    params = served_params(run.serving(), run.model.output_names(), data)
    return get_family(run.model.family).from_params(params)


def fit_baseline(prepared: Prepared, config: BaselineConfig, progress: bool = True) -> BaselineRun:
    """Fit head constants and network, then post-fit on the validation day (not the test day)."""
    check_inputs(config, prepared.history is not None)
    start, cpu_start = time.perf_counter(), time.process_time()
    split = prepared.split
    y_train = prepared.train.y.double().numpy()
    groups: DurationGroups | None = None
    if config.model == "d2q":
        groups = DurationGroups.fit(
            split.train["duration_ms"].to_numpy(dtype=np.float64), y_train, config.n_duration_groups
        )
    seed_everything(config.seed, config.num_threads)
    model = build_model(config, prepared.fitted, y_train, groups=groups)
    scale = config.label_scale
    if groups is not None:

        def targets(df: pd.DataFrame, enc: Encoded) -> torch.Tensor:
            assert groups is not None
            d = df["duration_ms"].to_numpy(dtype=np.float64)
            lv = groups.level(enc.y.double().numpy(), groups.group(d))
            return torch.from_numpy(lv.astype(np.float32))

        t_train = targets(split.train, prepared.train)
        t_val = targets(split.validation, prepared.validation)
    elif isinstance(model, DurationHead):
        d_train = split.train["duration_ms"].to_numpy(dtype=np.float64)
        d_val = split.validation["duration_ms"].to_numpy(dtype=np.float64)
        model.fit_training_days(d_train, y_train)
        t_train = model.targets(d_train, y_train)
        t_val = model.targets(d_val, prepared.validation.y.double().numpy())
    else:
        t_train, t_val = prepared.train.y / scale, prepared.validation.y / scale
    history = train_baseline(
        model, prepared.train, prepared.validation, t_train, t_val, config, progress=progress
    )
    if isinstance(model, ValueRegression):
        with torch.no_grad():
            loc = model.restore(predict_raw(model, prepared.validation)).double().numpy()
        fitted_scale = fit_normal_scale(loc, prepared.validation.y.double().numpy())
        model.scale_s.fill_(fitted_scale)  # type: ignore[operator]
    if isinstance(model, PointRegression):
        with torch.no_grad():
            point = model.restore(predict_raw(model, prepared.validation)).double().numpy()
        model.fit_spread(point, prepared.validation.y.double().numpy())
    if isinstance(model, DurationHead):
        with torch.no_grad():
            raw_val = predict_raw(model, prepared.validation)
        model.fit_validation_day(raw_val, prepared.validation.y.double().numpy())
    run = BaselineRun(
        config=config,
        fitted=prepared.fitted,
        window=training_window(split),
        model=model,
        history=history,
        groups=groups,
    )
    run.seconds = time.perf_counter() - start
    run.cpu_seconds = time.process_time() - cpu_start
    return run
