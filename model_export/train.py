"""Training EGMN and fitting its calibration.

Choices, and why:
- Label scale 10 s (``label_scale``): the NLL and the L1 term are computed on y / 10. In raw
  seconds the L1 term (tens of seconds) swamps the likelihood; dividing by the maximum watch
  time (~786 s, as the official code does) squeezes most labels into a sliver near 0 where
  the Gaussians collapse onto the exponential. 10 s puts the median near 0.5 and the 90th
  percentile near 6, where both terms have comparable weight.
- Adam (lr 2e-3, batch 2048): the standard choice for embedding-heavy recommenders; the
  embeddings get a small L2 penalty because most ids are seen only a few times.
- Early stopping on the validation day's NLL (patience 2, best epoch restored): the
  likelihood is what the served distribution is judged on; the L1 term alone would favour
  collapsing to the median.
- Calibration: a handful of parameters (:class:`model_export.egmn.Calibration`) fitted by
  maximum likelihood on the validation day, with the network frozen.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from model_export.egm_torch import EGMParams, egmn_loss, log_prob, soft_coverage
from model_export.egmn import EGMN, Calibration


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one EGMN run; recorded in the manifest extras."""

    point_mass: bool = True
    n_gaussians: int = 10
    embedding_dim: int = 16
    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.2
    alpha: float = 0.1
    beta: float = 1.0
    label_scale: float = 10.0
    lr: float = 2e-3
    embedding_l2: float = 1e-6
    batch_size: int = 2048
    max_epochs: int = 12
    patience: int = 2
    seed: int = 0
    num_threads: int = 2

    def as_dict(self) -> dict[str, object]:
        """Plain values for logs and manifests."""
        return asdict(self)


@dataclass
class Encoded:
    """One split as model inputs: categorical indices, numeric matrix, labels in seconds."""

    categorical: torch.Tensor
    numeric: torch.Tensor
    y: torch.Tensor

    @classmethod
    def from_numpy(cls, inputs: dict[str, np.ndarray], y: np.ndarray) -> Encoded:
        """Wrap the tensors ``service.runtime.features.encode_features`` produced."""
        return cls(
            categorical=torch.from_numpy(np.ascontiguousarray(inputs["categorical"])),
            numeric=torch.from_numpy(np.ascontiguousarray(inputs["numeric"])),
            y=torch.from_numpy(np.asarray(y, dtype=np.float32)),
        )

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class History:
    """Per-epoch figures of a run (scaled units)."""

    train_loss: list[float] = field(default_factory=list)
    validation_nll: list[float] = field(default_factory=list)
    best_epoch: int = -1


def seed_everything(seed: int, num_threads: int = 2) -> None:
    """Same seed, same model: fixes the torch generator and the thread count."""
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)


@torch.no_grad()
def predict_scaled(model: EGMN, data: Encoded, batch_size: int = 8192) -> EGMParams:
    """Model parameters for every row of a split (eval mode, scaled units)."""
    model.eval()
    parts = [
        model(data.categorical[a : a + batch_size], data.numeric[a : a + batch_size])
        for a in range(0, len(data), batch_size)
    ]
    return EGMParams(
        lam=torch.cat([p.lam for p in parts]),
        log_w=torch.cat([p.log_w for p in parts]),
        mu=torch.cat([p.mu for p in parts]),
        sigma=torch.cat([p.sigma for p in parts]),
        point_mass=model.point_mass,
    )


def validation_nll(model: EGMN, data: Encoded, scale: float) -> float:
    """Mean NLL of a split in scaled units (comparable across epochs, not across scales)."""
    params = predict_scaled(model, data)
    return float(-log_prob(params, data.y / scale).mean())


class LoopConfig(Protocol):
    """The optimisation settings every trainer shares (TrainConfig, BaselineConfig).

    Models are any module with an ``embeddings`` ModuleList (one table per categorical
    column), which every model here has.
    """

    lr: float
    embedding_l2: float
    batch_size: int
    max_epochs: int
    patience: int
    seed: int


def fit_early_stopping(
    model: torch.nn.Module,
    n: int,
    categorical: torch.Tensor,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    validate: Callable[[], float],
    config: LoopConfig,
    label: str,
    progress: bool,
    stop_on_nonfinite: bool = False,
) -> History:
    """Adam over shuffled mini-batches, early stopping on ``validate``, best epoch restored.

    One loop for EGMN and every baseline, so that they differ only in the loss: the same
    batches, the same L2 on the embeddings of each batch, the same stopping rule.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    history = History()
    best_state: dict[str, torch.Tensor] | None = None
    best = math.inf
    steps = math.ceil(n / config.batch_size)
    prefix = f"{label} " if label else ""
    for epoch in range(config.max_epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        bar = tqdm(
            range(steps),
            desc=f"{prefix}epoch {epoch + 1}/{config.max_epochs}",
            disable=not progress,
            leave=False,
        )
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            if idx.numel() < 2:  # BatchNorm needs two rows
                continue
            loss = batch_loss(idx)
            if config.embedding_l2 > 0:
                cat = categorical[idx]
                reg = sum(emb(cat[:, i]).pow(2).sum() for i, emb in enumerate(model.embeddings))
                loss = loss + config.embedding_l2 * reg / idx.numel()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.numel()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        history.train_loss.append(total / n)
        val = validate()
        history.validation_nll.append(val)
        if progress:
            tqdm.write(
                f"{prefix}epoch {epoch + 1}: train loss {total / n:.4f}  validation {val:.4f}"
            )
        if stop_on_nonfinite and not math.isfinite(val):
            break
        if val < best - 1e-4:
            best, history.best_epoch = val, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - history.best_epoch >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def train_egmn(
    train: Encoded,
    validation: Encoded,
    cardinalities: list[int],
    numeric_width: int,
    config: TrainConfig,
    progress: bool = True,
) -> tuple[EGMN, History]:
    """Fit EGMN with early stopping on the validation NLL; returns the best epoch's model."""
    seed_everything(config.seed, config.num_threads)
    model = EGMN(
        cardinalities,
        numeric_width,
        n_gaussians=config.n_gaussians,
        embedding_dim=config.embedding_dim,
        hidden=config.hidden,
        dropout=config.dropout,
        point_mass=config.point_mass,
    )
    scale = config.label_scale

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        params = model(train.categorical[idx], train.numeric[idx])
        return egmn_loss(params, train.y[idx] / scale, config.alpha, config.beta)[0]

    history = fit_early_stopping(
        model,
        len(train),
        train.categorical,
        batch_loss,
        lambda: validation_nll(model, validation, scale),
        config,
        label="",
        progress=progress,
    )
    return model, history


CALIBRATION_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def fit_calibration(
    model: EGMN,
    validation: Encoded,
    config: TrainConfig,
    steps: int = 300,
    coverage_weight: float = 100.0,
) -> Calibration:
    """Calibration on the validation day with the network frozen.

    Objective: NLL + ``coverage_weight`` * sum over levels 0.05..0.95 of (coverage - level)^2.
    Likelihood alone leaves the low quantiles too high on these logs (too little mass just
    above zero), so the quantile-coverage term pins the whole PIT curve, not only the three
    reported levels, while the NLL keeps the shape honest.
    """
    torch.manual_seed(config.seed)
    frozen = predict_scaled(model, validation)
    frozen = EGMParams(
        lam=frozen.lam.detach(),
        log_w=frozen.log_w.detach(),
        mu=frozen.mu.detach(),
        sigma=frozen.sigma.detach(),
        point_mass=frozen.point_mass,
    )
    y = validation.y / config.label_scale
    calibration = Calibration(config.n_gaussians, frozen.log_w.shape[1])
    levels = torch.tensor(CALIBRATION_LEVELS)
    optimizer = torch.optim.Adam(calibration.parameters(), lr=0.03)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        calibrated = calibration(frozen)
        loss = -log_prob(calibrated, y).mean()
        if coverage_weight > 0:
            gap = soft_coverage(calibrated, y, levels) - levels
            loss = loss + coverage_weight * (gap * gap).sum()
        loss.backward()
        optimizer.step()
    calibration.eval()
    if not all(bool(torch.isfinite(p).all()) for p in calibration.parameters()):
        raise RuntimeError("calibration diverged (non-finite parameters)")
    return calibration
