"""The one training loop of every model, and the batched inference it validates with.

EGMN and every baseline go through :func:`fit_early_stopping`, so that they differ only in
their loss: the same shuffled batches, the same L2 on the embeddings of each batch, the same
stopping rule.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from model_export.data.prepared import Encoded
from model_export.training.config import LoopConfig


@dataclass
class History:
    """Per-epoch figures of a run (scaled units)."""

    train_loss: list[float] = field(default_factory=list)
    validation_nll: list[float] = field(default_factory=list)
    best_epoch: int = -1

    def state(self) -> dict[str, Any]:
        """Plain values for a checkpoint."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> History:
        """Inverse of :meth:`state`; baselines' checkpoints written before EGMN and the
        baselines shared one format name the validation figures ``validation_loss``."""
        validation = state["validation_nll" if "validation_nll" in state else "validation_loss"]
        return cls(state["train_loss"], validation, state["best_epoch"])


def seed_everything(seed: int, num_threads: int = 2) -> None:
    """Same seed, same model: fixes the torch generator and the thread count."""
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)


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
        # disable=None: a bar on a terminal only. Written to a file, a bar is a carriage
        # return per update (a log of hundreds of kB); the per-epoch line below says enough.
        bar = tqdm(
            range(steps),
            desc=f"{prefix}epoch {epoch + 1}/{config.max_epochs}",
            disable=None if progress else True,
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
            sys.stdout.flush()
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


@torch.no_grad()
def predict_batches(model: nn.Module, data: Encoded, batch_size: int = 8192) -> list[Any]:
    """The model's output for every row of a split, batch by batch (eval mode, no gradient)."""
    model.eval()
    return [
        model(data.categorical[a : a + batch_size], data.numeric[a : a + batch_size])
        for a in range(0, len(data), batch_size)
    ]


@torch.no_grad()
def served_params(serving: nn.Module, names: list[str], data: Encoded) -> dict[str, np.ndarray]:
    """The family's parameters (float64, seconds) of every row, from the exported module."""
    outs = serving(data.categorical, data.numeric)
    return {name: out.double().numpy() for name, out in zip(names, outs, strict=True)}
