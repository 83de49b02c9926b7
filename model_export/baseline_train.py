"""Training, post-fitting, evaluation and checkpoints of the baselines.

Honesty rules, enforced here rather than promised in the report:
- Same inputs: the :class:`model_export.pipeline.Prepared` tensors EGMN trains on (features
  fitted on the training days only), same trunk (:class:`model_export.baseline_models.Trunk`
  wraps EGMN's MLP backbone), same label scale.
- Same optimisation budget: :class:`BaselineConfig`'s shared fields default to EGMN's
  :class:`model_export.train.TrainConfig` values (a test holds them equal): Adam, lr 2e-3,
  batch 2048, at most 12 epochs, patience 2, embedding L2 1e-6, seed 0.
- Same selection: early stopping on the validation day's value of each model's own
  objective, best epoch restored; the only other use of the validation day is ``vr``'s
  spread. Head constants (bucket edges, CREAD's split points, D2Q's duration groups) come
  from the training days' labels and durations.
- No tuning on the test day: each baseline has one configuration, the papers' defaults
  where they give one, fixed before any test figure was seen.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from model_export.baseline_models import (
    CREAD,
    BaselineModel,
    BucketSoftmax,
    DurationQuantile,
    ServingBaseline,
    ValueRegression,
    WeightedLogistic,
    ZeroInflatedLognormal,
    cread_thresholds,
    exponential_bucket_edges,
)
from model_export.features import FittedFeatures
from model_export.metrics import evaluate_distribution, evaluate_point
from model_export.pipeline import Encoded, Prepared, training_window
from model_export.train import History, fit_early_stopping, seed_everything
from service.distributions import Distribution, Normal, get_family
from service.manifest import TrainingWindow

SERVED = ("vr", "wlr", "ziln", "softmax", "cread")
"""Baselines exported to ``models/<name>/1`` and served by their family."""

OFFLINE = ("d2q",)
"""Baselines with no density of their own: point metrics only, not exported."""

ALL = (*SERVED, *OFFLINE)

_CLASSES: dict[str, type[BaselineModel]] = {
    cls.name: cls
    for cls in (
        ValueRegression,
        WeightedLogistic,
        ZeroInflatedLognormal,
        BucketSoftmax,
        CREAD,
        DurationQuantile,
    )
}


@dataclass(frozen=True)
class BaselineConfig:
    """One baseline run; the shared fields are EGMN's, the rest are the head's own knobs."""

    model: str
    embedding_dim: int = 16
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.2
    label_scale: float = 10.0
    lr: float = 2e-3
    embedding_l2: float = 1e-6
    batch_size: int = 2048
    max_epochs: int = 12
    patience: int = 2
    seed: int = 0
    num_threads: int = 2
    # softmax: B buckets, edges [0, geomspace(first, top, B)]
    n_buckets: int = 20
    bucket_first_s: float = 0.5
    bucket_top_s: float = 800.0
    # cread: M split points, warp alpha, loss weights (Huber delta in scaled units)
    n_thresholds: int = 30
    cread_alpha: float = 2.0
    monotone_weight: float = 1.0
    huber_weight: float = 1.0
    huber_delta: float = 1.0
    # d2q: equal-frequency duration groups (unknown duration is a group of its own)
    n_duration_groups: int = 30

    def as_dict(self) -> dict[str, object]:
        """Plain values for logs and manifests."""
        return asdict(self)

    @classmethod
    def shared_fields(cls) -> tuple[str, ...]:
        """The fields every model, EGMN included, shares (the optimisation budget)."""
        return tuple(f.name for f in fields(cls))[1:12]


class DurationGroups:
    """D2Q's duration groups and, per group, the sorted training labels.

    Group 0 holds rows with an unknown duration (missing or 0 ms, as the feature schema
    treats them); groups 1..G split known durations at the training days' quantiles, so each
    holds about the same number of training rows.
    """

    def __init__(self, cuts: np.ndarray, labels: list[np.ndarray]) -> None:
        self.cuts = np.asarray(cuts, dtype=np.float64)
        self.labels = [np.sort(np.asarray(v, dtype=np.float64)) for v in labels]

    @classmethod
    def fit(cls, duration_ms: np.ndarray, y: np.ndarray, n_groups: int) -> DurationGroups:
        """Cuts and per-group labels from the training days."""
        d = np.asarray(duration_ms, dtype=np.float64)
        known = np.isfinite(d) & (d > 0)
        inner = np.quantile(d[known], np.arange(1, n_groups) / n_groups)
        cuts = np.unique(inner)
        groups = cls(cuts, [])
        g = groups.group(d)
        groups.labels = [np.sort(y[g == k]) for k in range(len(cuts) + 2)]
        return groups

    @property
    def n_groups(self) -> int:
        """Groups including the unknown-duration one."""
        return len(self.cuts) + 2

    def group(self, duration_ms: np.ndarray) -> np.ndarray:
        """Group index of each row (0 = unknown duration)."""
        d = np.asarray(duration_ms, dtype=np.float64)
        known = np.isfinite(d) & (d > 0)
        g = np.searchsorted(self.cuts, np.where(known, d, 0.0), side="right") + 1
        return np.where(known, g, 0).astype(np.int64)

    def level(self, y: np.ndarray, group: np.ndarray) -> np.ndarray:
        """The label's mid-rank level among its group's training labels, in (0, 1)."""
        out = np.full(y.shape, 0.5)
        for k, ref in enumerate(self.labels):
            rows = group == k
            if not rows.any() or ref.size == 0:
                continue
            below = np.searchsorted(ref, y[rows], side="left")
            upto = np.searchsorted(ref, y[rows], side="right")
            out[rows] = (below + 0.5 * (upto - below)) / ref.size
        return out

    def quantile(self, level: np.ndarray, group: np.ndarray) -> np.ndarray:
        """Map levels back through each group's training quantile function (seconds)."""
        out = np.zeros(level.shape)
        for k, ref in enumerate(self.labels):
            rows = group == k
            if rows.any() and ref.size:
                # Hazen's plotting position (i + 0.5) / n is the inverse of the mid-rank level.
                out[rows] = np.quantile(ref, np.clip(level[rows], 0.0, 1.0), method="hazen")
        return out

    def state(self) -> dict[str, list[float] | list[list[float]]]:
        """Plain lists for a checkpoint."""
        return {"cuts": self.cuts.tolist(), "labels": [v.tolist() for v in self.labels]}

    @classmethod
    def from_state(cls, state: dict[str, list[float] | list[list[float]]]) -> DurationGroups:
        """Inverse of :meth:`state`."""
        return cls(np.asarray(state["cuts"]), [np.asarray(v) for v in state["labels"]])


def build_model(
    config: BaselineConfig,
    fitted: FittedFeatures,
    train_y: np.ndarray,
    thresholds_s: list[float] | None = None,
) -> BaselineModel:
    """The untrained baseline, its head constants fitted on the training labels.

    ``thresholds_s`` overrides CREAD's split points (a checkpoint carries its own).
    """
    if config.model not in _CLASSES:
        raise ValueError(f"unknown baseline {config.model!r}; known: {sorted(_CLASSES)}")
    common: dict[str, object] = {
        "label_scale": config.label_scale,
        "embedding_dim": config.embedding_dim,
        "hidden": config.hidden,
        "dropout": config.dropout,
    }
    cards, width = fitted.cardinalities, fitted.numeric_width
    if config.model == "softmax":
        edges = exponential_bucket_edges(
            config.n_buckets, config.bucket_first_s, config.bucket_top_s
        )
        return BucketSoftmax(cards, width, edges_s=edges, **common)
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
    return _CLASSES[config.model](cards, width, **common)


@torch.no_grad()
def predict_raw(model: BaselineModel, data: Encoded, batch_size: int = 8192) -> torch.Tensor:
    """Raw head outputs of every row (eval mode)."""
    model.eval()
    parts = [
        model(data.categorical[a : a + batch_size], data.numeric[a : a + batch_size])
        for a in range(0, len(data), batch_size)
    ]
    return torch.cat(parts)


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


def fit_normal_scale(loc: np.ndarray, y: np.ndarray) -> float:
    """The one spread (seconds) maximising the censored normal's likelihood of ``y``.

    A log-spaced grid, then a finer one around the best point: the likelihood is unimodal in
    the scale and a 1-D search needs no gradient.
    """

    def nll(scale: float) -> float:
        dist = Normal(loc=loc, scale=np.full(loc.shape, scale))
        return float(-dist.log_prob(y[:, None])[:, 0].mean())

    grid = np.geomspace(0.1, 1000.0, 81)
    best = float(grid[int(np.argmin([nll(s) for s in grid]))])
    fine = np.geomspace(best / 1.13, best * 1.13, 41)
    return float(fine[int(np.argmin([nll(s) for s in fine]))])


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


def predict_distribution(run: BaselineRun, data: Encoded) -> Distribution:
    """The served distribution of every row, through the service's numpy family."""
    if run.model.family is None:
        raise ValueError(f"{run.name} has no served distribution")
    with torch.no_grad():
        outs = run.serving()(data.categorical, data.numeric)
    params = {
        name: out.double().numpy() for name, out in zip(run.model.output_names(), outs, strict=True)
    }
    return get_family(run.model.family).from_params(params)


def d2q_point(run: BaselineRun, data: Encoded, duration_ms: np.ndarray) -> np.ndarray:
    """D2Q's prediction in seconds: the predicted level through the row's group quantiles."""
    assert isinstance(run.model, DurationQuantile) and run.groups is not None
    with torch.no_grad():
        level = run.model.level(predict_raw(run.model, data)).double().numpy()
    return run.groups.quantile(level, run.groups.group(duration_ms))


def run_baseline(
    prepared: Prepared, config: BaselineConfig, progress: bool = True, evaluate: bool = True
) -> BaselineRun:
    """Fit head constants and network, post-fit on the validation day, score the test day."""
    start, cpu_start = time.perf_counter(), time.process_time()
    split = prepared.split
    y_train = prepared.train.y.double().numpy()
    seed_everything(config.seed, config.num_threads)
    model = build_model(config, prepared.fitted, y_train)
    scale = config.label_scale
    groups: DurationGroups | None = None
    if config.model == "d2q":
        groups = DurationGroups.fit(
            split.train["duration_ms"].to_numpy(dtype=np.float64), y_train, config.n_duration_groups
        )

        def targets(df: pd.DataFrame, enc: Encoded) -> torch.Tensor:
            assert groups is not None
            d = df["duration_ms"].to_numpy(dtype=np.float64)
            lv = groups.level(enc.y.double().numpy(), groups.group(d))
            return torch.from_numpy(lv.astype(np.float32))

        t_train = targets(split.train, prepared.train)
        t_val = targets(split.validation, prepared.validation)
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
    if evaluate:
        run.metrics = evaluate_run(run, prepared)
    return run


def evaluate_run(run: BaselineRun, prepared: Prepared) -> dict[str, float]:
    """Test-day figures of a run (point metrics only for D2Q)."""
    y = prepared.test.y.double().numpy()
    if run.model.family is None:
        d = prepared.split.test["duration_ms"].to_numpy(dtype=np.float64)
        return evaluate_point(d2q_point(run, prepared.test, d), y)
    return evaluate_distribution(predict_distribution(run, prepared.test), y)


def save_run(run: BaselineRun, path: Path) -> None:
    """Everything export and the report need, in one torch checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "config": run.config.as_dict(),
            **run.fitted.state(),
            "window": run.window.model_dump(mode="json"),
            "model": run.model.state_dict(),
            "extras": run.model.extras(),
            "groups": None if run.groups is None else run.groups.state(),
            "metrics": run.metrics,
            "history": {
                "train_loss": run.history.train_loss,
                "validation_loss": run.history.validation_nll,
                "best_epoch": run.history.best_epoch,
            },
            "seconds": run.seconds,
            "cpu_seconds": run.cpu_seconds,
        },
        path,
    )


def load_run(path: Path) -> BaselineRun:
    """Rebuild a run from its checkpoint (no data needed)."""
    ck = torch.load(path, weights_only=False)
    cfg = dict(ck["config"])
    cfg["hidden"] = tuple(cfg["hidden"])
    config = BaselineConfig(**cfg)
    fitted = FittedFeatures.from_state(ck)
    state = ck["model"]
    # Head constants are buffers; CREAD's count sizes its head, so it comes from the state.
    thresholds = state["thresholds_s"].tolist() if "thresholds_s" in state else None
    model = build_model(config, fitted, np.zeros(1), thresholds_s=thresholds)
    model.load_state_dict(state)
    model.eval()
    hist = ck["history"]
    return BaselineRun(
        config=config,
        fitted=fitted,
        window=TrainingWindow.model_validate(ck["window"]),
        model=model,
        history=History(hist["train_loss"], hist["validation_loss"], hist["best_epoch"]),
        groups=None if ck["groups"] is None else DurationGroups.from_state(ck["groups"]),
        metrics=ck["metrics"],
        seconds=float(ck["seconds"]),
        cpu_seconds=float(ck.get("cpu_seconds", 0.0)),
    )
