"""The shared trunk: embeddings and the MLP backbone every model here puts its head on.

EGMN's backbone is the paper's (Linear -> BatchNorm -> ReLU -> Dropout, widths 256, 128, 64);
every baseline embeds the same features the same way and runs them through the same
:class:`MLPBackbone`, so that the evaluation compares heads and losses, not trunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLPBackbone(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout blocks; the paper's default backbone."""

    def __init__(
        self, in_dim: int, hidden: Sequence[int] = (256, 128, 64), dropout: float = 0.2
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers += [
                nn.Linear(prev, width),
                nn.BatchNorm1d(width),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            prev = width
        self.net = nn.Sequential(*layers)
        self.out_dim = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


class Trunk(nn.Module):
    """Embeddings + EGMN's MLP backbone: features -> hidden vector."""

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        embedding_dim: int = 16,
        hidden: Sequence[int] = (256, 128, 64),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_dim) for c in cardinalities)
        for emb in self.embeddings:  # as EGMN initialises its own
            nn.init.normal_(emb.weight, std=0.05)
        in_dim = embedding_dim * len(cardinalities) + numeric_width
        self.backbone = MLPBackbone(in_dim, hidden, dropout)
        self.out_dim = self.backbone.out_dim

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        embedded = [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.backbone(torch.cat([*embedded, numeric], dim=1))  # type: ignore[no-any-return]
