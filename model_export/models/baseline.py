"""The baselines' common base: one trunk shared with EGMN, one head and loss per baseline.

Every baseline embeds the same features the same way as EGMN (16-dim embeddings, initialised
alike) and feeds them through EGMN's own backbone (:mod:`model_export.models.backbone`), so
the only differences in the evaluation are the head, the loss and the served family. Each works in
scaled time units (seconds / ``label_scale``, 10 s as for EGMN) and converts back to seconds
only in :meth:`BaselineModel.served`, which is what the ONNX graph emits.

Each head is a module of its own beside this one:

- ``vr``: 1 output, MSE; ``normal`` censored at 0 with one spread fitted on the validation
  day; point ``max(loc, 0)``.
- ``wlr``: 1 logit, weighted logistic loss (positive weight y, negative weight 1);
  ``exponential`` with rate 1/odds; point the odds.
- ``ziln``: 3 outputs, zero-inflated lognormal likelihood; ``ziln``; point the mean.
- ``softmax``: B logits, cross-entropy over exponentially growing buckets; ``histogram``;
  point the bucket-midpoint mean.
- ``cread``: M logits, BCE at adaptive split points + monotonicity penalty + Huber on the
  restored mean; ``survival``; point the restored mean.
- ``d2q``: K outputs, pinball loss on the quantile level within the duration group at K
  levels; ``quantile`` (each level through the group's quantile function); point the
  group's quantile at the predicted median level.

Every head's served parameters carry a leading batch axis, shared constants (bucket edges,
thresholds, the fitted spread) included: a batcher may then split any output by rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from model_export.models.backbone import Trunk


class BaselineModel(nn.Module, ABC):
    """Trunk + linear head; subclasses say what the head means, its loss and its family."""

    name: ClassVar[str]
    family: ClassVar[str | None]

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        out_dim: int,
        label_scale: float = 10.0,
        embedding_dim: int = 16,
        hidden: Sequence[int] = (256, 128, 64),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.trunk = Trunk(cardinalities, numeric_width, embedding_dim, hidden, dropout)
        self.head = nn.Linear(self.trunk.out_dim, out_dim)
        self.label_scale = float(label_scale)

    @property
    def embeddings(self) -> nn.ModuleList:
        """The embedding tables (the trainer puts a small L2 penalty on the rows it uses)."""
        return self.trunk.embeddings

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        """Raw head output, (n, out_dim)."""
        return self.head(self.trunk(categorical, numeric))  # type: ignore[no-any-return]

    @abstractmethod
    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean training loss of a batch; ``y`` in scaled units."""

    def validation_loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What early stopping watches on the validation day: the model's own objective."""
        return self.loss(raw, y)

    @abstractmethod
    def restore(self, raw: torch.Tensor) -> torch.Tensor:
        """The model's own point prediction in seconds, (n,)."""

    @abstractmethod
    def served(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The served family's parameters in seconds, in the order of :meth:`output_names`."""

    @abstractmethod
    def output_names(self) -> list[str]:
        """ONNX output names, equal to the family's parameter names."""

    def extras(self) -> dict[str, float | str | list[float]]:
        """Head constants worth recording in the manifest (informational)."""
        return {}


class ServingBaseline(nn.Module):
    """What is exported: features -> the family's parameters in seconds."""

    def __init__(self, model: BaselineModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.served(self.model(categorical, numeric))

    def output_names(self) -> list[str]:
        """ONNX output names (the family's parameter names)."""
        return self.model.output_names()


def per_row(constant: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A shared constant repeated once per row of ``like`` (outputs keep a batch axis)."""
    return constant.unsqueeze(0).expand(like.shape[0], *constant.shape)
