"""The shared trunk: embeddings and the MLP backbone every model here puts its head on.

EGMN's backbone is the paper's (Linear -> BatchNorm -> ReLU -> Dropout, widths 256, 128, 64);
every baseline embeds the same features the same way and runs them through the same
:class:`MLPBackbone`, so that the evaluation compares heads and losses, not trunks.

Options of the trunk (off by default, so every shipped model keeps its network), the same for
every model that builds its trunk through :class:`TrunkOptions`:
- ``cross_layers``: a DCN-v2 cross network beside the MLP (the parallel form), on the same
  input ``x0`` (embeddings + numeric features): ``x_{l+1} = x0 * (U (V^T x_l) + b) + x_l``,
  low-rank with ``cross_rank`` (full rank when 0). Its output is concatenated with the MLP's.
- ``id_embedding_dim``: a wider embedding for the id fields (user, video, author).
- ``duration_user``: the user's embedding multiplied by the standardised log duration,
  appended to the input, so that how long a video is can act per user from the first layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


class CrossNetwork(nn.Module):
    """DCN-v2's cross layers: ``x_{l+1} = x0 * (W x_l + b) + x_l``, ``W = U V^T`` when
    ``rank`` > 0 (else a full matrix). Keeps the input's width."""

    def __init__(self, in_dim: int, n_layers: int, rank: int = 0) -> None:
        super().__init__()
        self.out_dim = in_dim
        if rank > 0:
            self.layers = nn.ModuleList(
                nn.Sequential(nn.Linear(in_dim, rank, bias=False), nn.Linear(rank, in_dim))
                for _ in range(n_layers)
            )
        else:
            self.layers = nn.ModuleList(nn.Linear(in_dim, in_dim) for _ in range(n_layers))
        for layer in self.layers:  # start near the identity x_{l+1} = x_l
            last = layer[-1] if isinstance(layer, nn.Sequential) else layer
            nn.init.normal_(last.weight, std=0.01)
            nn.init.zeros_(last.bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class CrossMLPBackbone(nn.Module):
    """DCN-v2, parallel form: the cross network and the MLP side by side, outputs joined."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (256, 128, 64),
        dropout: float = 0.2,
        cross_layers: int = 2,
        cross_rank: int = 0,
    ) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim)
        self.cross = CrossNetwork(in_dim, cross_layers, cross_rank)
        self.mlp = MLPBackbone(in_dim, hidden, dropout)
        self.out_dim = self.mlp.out_dim + self.cross.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mlp(x), self.cross(self.norm(x))], dim=1)


ID_FIELDS = ("user_id", "video_id", "author_id")
"""Categorical columns that get ``id_embedding_dim`` when it is set."""

USER_FIELD = "user_id"
DURATION_COLUMN = "duration_ms"


@dataclass(frozen=True)
class TrunkOptions:
    """The trunk's options (module docstring); the defaults are the paper's trunk."""

    embedding_dim: int = 16
    id_embedding_dim: int = 0
    cross_layers: int = 0
    cross_rank: int = 0
    duration_user: bool = False


class InputLayout:
    """Where the trunk's options read their columns: the embedding width of each categorical
    column, and with ``duration_user`` the user column and the duration column."""

    def __init__(
        self,
        n_categorical: int,
        numeric_width: int,
        options: TrunkOptions = TrunkOptions(),
        categorical_names: Sequence[str] = (),
        numeric_names: Sequence[str] = (),
    ) -> None:
        if categorical_names and len(categorical_names) != n_categorical:
            raise ValueError(f"{len(categorical_names)} categorical names, {n_categorical} columns")
        names = list(categorical_names) or [""] * n_categorical
        wide = options.id_embedding_dim
        self.dims = [wide if wide and name in ID_FIELDS else options.embedding_dim for name in names]
        self.user_index = -1
        self.duration_index = -1
        extra = 0
        if options.duration_user:
            numeric = list(numeric_names)
            if USER_FIELD not in names or DURATION_COLUMN not in numeric:
                raise ValueError("duration_user needs the user_id and duration_ms columns")
            self.user_index = names.index(USER_FIELD)
            self.duration_index = numeric.index(DURATION_COLUMN)
            extra = self.dims[self.user_index]
        self.in_dim = sum(self.dims) + numeric_width + extra

    def embeddings(self, cardinalities: Sequence[int]) -> nn.ModuleList:
        """One table per categorical column, initialised as EGMN's are."""
        tables = nn.ModuleList(
            nn.Embedding(c, d) for c, d in zip(cardinalities, self.dims, strict=True)
        )
        for emb in tables:
            nn.init.normal_(emb.weight, std=0.05)
        return tables

    def x0(
        self, embeddings: nn.ModuleList, categorical: torch.Tensor, numeric: torch.Tensor
    ) -> torch.Tensor:
        """The backbone's input: embeddings, numeric features and the optional product."""
        embedded = [emb(categorical[:, i]) for i, emb in enumerate(embeddings)]
        parts = [*embedded, numeric]
        if self.user_index >= 0:
            duration = numeric[:, self.duration_index : self.duration_index + 1]
            parts.append(embedded[self.user_index] * duration)
        return torch.cat(parts, dim=1)


def build_backbone(
    in_dim: int,
    hidden: Sequence[int],
    dropout: float,
    options: TrunkOptions = TrunkOptions(),
) -> nn.Module:
    """The MLP, or DCN-v2 (cross network beside the MLP) when ``options.cross_layers``."""
    if options.cross_layers > 0:
        return CrossMLPBackbone(in_dim, hidden, dropout, options.cross_layers, options.cross_rank)
    return MLPBackbone(in_dim, hidden, dropout)


class Trunk(nn.Module):
    """Embeddings + EGMN's backbone: features -> hidden vector."""

    def __init__(
        self,
        cardinalities: Sequence[int],
        numeric_width: int,
        embedding_dim: int = 16,
        hidden: Sequence[int] = (256, 128, 64),
        dropout: float = 0.2,
        options: TrunkOptions | None = None,
        categorical_names: Sequence[str] = (),
        numeric_names: Sequence[str] = (),
    ) -> None:
        super().__init__()
        opts = options if options is not None else TrunkOptions(embedding_dim=embedding_dim)
        self.layout = InputLayout(
            len(cardinalities), numeric_width, opts, categorical_names, numeric_names
        )
        self.embeddings = self.layout.embeddings(cardinalities)
        self.backbone = build_backbone(self.layout.in_dim, hidden, dropout, opts)
        self.out_dim = int(getattr(self.backbone, "out_dim", hidden[-1]))

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        x0 = self.layout.x0(self.embeddings, categorical, numeric)
        return self.backbone(x0)  # type: ignore[no-any-return]
