"""The declared feature schema of the KuaiRand models and its fitting on the training days.

Declarations say what each input is (which raw column, categorical or numeric, which
transform); fitting turns them into the manifest's feature specs with constants learnt on
the training days only. Encoding is never done here: it is ``service.runtime.features``, the
same code the service runs.

Rules worth knowing:
- Only pre-view information is an input; feedback columns never are (see ``kuairand.py``).
- ``duration_ms == 0`` (2,646 rows, all without a known video duration) means "duration
  unknown": it is treated as missing, filled with the training mean of log1p(duration) and
  flagged by the ``duration_ms__missing`` indicator column. Those rows stay in training, since
  they are served the same way.
- ``-124`` in the user table is a sentinel for "not recorded": missing, index 0.
- Ids (user, video, author, music type...) seen fewer than ``min_count`` times on the training
  days share the OOV index with ids never seen; this keeps the shipped model small and trains
  the OOV embedding on rare ids, which is what an unseen id at serving time looks like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from model_export.data.kuairand import raw_columns
from service.manifest import (
    FIRST_VOCAB_INDEX,
    CategoricalFeature,
    CategoricalTransform,
    InputTensor,
    LookupFeature,
    NumericFeature,
)
from service.runtime.features import encode_categorical, weekday_from_yyyymmdd
from service.runtime.lookup import LookupTables, Table

USER_SENTINEL = -124


@dataclass(frozen=True)
class CategoricalDecl:
    """A categorical input before fitting."""

    name: str
    source: str
    dtype: str = "int64"
    transform: CategoricalTransform = "identity"
    min_count: int = 1
    missing_values: tuple[int, ...] | tuple[str, ...] = ()


@dataclass(frozen=True)
class NumericDecl:
    """A numeric input before fitting."""

    name: str
    source: str
    log1p: bool = False
    missing_values: tuple[float, ...] = ()
    missing_indicator: bool = False


Decl = CategoricalDecl | NumericDecl

_USER_INT_CATEGORICALS = (
    "is_lowactive_period",
    "is_live_streamer",
    "is_video_author",
    *(f"onehot_feat{i}" for i in range(18)),
)
_USER_TEXT_CATEGORICALS = (
    "user_active_degree",
    "follow_user_num_range",
    "fans_user_num_range",
    "friend_user_num_range",
    "register_days_range",
)

KUAIRAND_FEATURES: tuple[Decl, ...] = (
    CategoricalDecl("user_id", "user_id", min_count=5),
    CategoricalDecl("video_id", "video_id", min_count=5),
    CategoricalDecl("author_id", "author_id", min_count=5),
    CategoricalDecl("tag", "tag", dtype="string", min_count=5),
    CategoricalDecl("tab", "tab"),
    CategoricalDecl("hour_of_day", "hourmin", transform="hour_of_day"),
    CategoricalDecl("weekday", "date", transform="weekday"),
    *(
        CategoricalDecl(c, c, min_count=5, missing_values=(USER_SENTINEL,))
        for c in _USER_INT_CATEGORICALS
    ),
    *(CategoricalDecl(c, c, dtype="string", min_count=5) for c in _USER_TEXT_CATEGORICALS),
    CategoricalDecl("video_type", "video_type", dtype="string", min_count=5),
    CategoricalDecl("upload_type", "upload_type", dtype="string", min_count=5),
    CategoricalDecl("music_type", "music_type", min_count=5),
    NumericDecl(
        "duration_ms", "duration_ms", log1p=True, missing_values=(0.0,), missing_indicator=True
    ),
    NumericDecl("freshness_days", "freshness_days"),
    *(
        NumericDecl(c, c, log1p=True, missing_values=(float(USER_SENTINEL),))
        for c in ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
    ),
    NumericDecl("server_width", "server_width", log1p=True),
    NumericDecl("server_height", "server_height", log1p=True),
)

CATEGORICAL_INPUT = "categorical"
NUMERIC_INPUT = "numeric"


Spec = CategoricalFeature | NumericFeature | LookupFeature


@dataclass(frozen=True)
class FrozenHistory:
    """The history tables an exported model ships: as of the end of ``cutoff_date``."""

    tables: LookupTables
    cutoff_date: int
    prior_views: float

    def state(self) -> dict[str, Any]:
        """Plain arrays and numbers for a checkpoint."""
        return {
            "cutoff_date": self.cutoff_date,
            "prior_views": self.prior_views,
            "tables": {
                name: {
                    "ids": table.ids,
                    "columns": dict(table.columns),
                    "defaults": dict(table.defaults),
                }
                for name, table in self.tables.tables.items()
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FrozenHistory:
        """Inverse of :meth:`state`."""
        tables = {
            name: Table(
                ids=np.asarray(t["ids"], dtype=np.int64),
                columns={k: np.asarray(v, dtype=np.float32) for k, v in t["columns"].items()},
                defaults={k: float(v) for k, v in t["defaults"].items()},
            )
            for name, t in state["tables"].items()
        }
        return cls(LookupTables(tables), int(state["cutoff_date"]), float(state["prior_views"]))


@dataclass(frozen=True)
class FittedFeatures:
    """Fitted feature specs plus the input tensor layout they feed (and, with lookup
    features, the tables they read once exported)."""

    features: list[Spec]
    inputs: list[InputTensor] = field(default_factory=list)
    history: FrozenHistory | None = None

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes, in the column order of the categorical tensor."""
        return [f.cardinality for f in self.features if isinstance(f, CategoricalFeature)]

    @property
    def numeric_width(self) -> int:
        """Columns of the numeric tensor."""
        return len(self.inputs[1].columns)

    def state(self) -> dict[str, Any]:
        """Plain values for a checkpoint (one format for EGMN and the baselines); the
        history tables, when there are any, as numpy arrays."""
        out: dict[str, Any] = {
            "features": [f.model_dump(mode="json") for f in self.features],
            "inputs": [t.model_dump(mode="json") for t in self.inputs],
        }
        if self.history is not None:
            out["lookup_tables"] = self.history.state()
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FittedFeatures:
        """Inverse of :meth:`state`; accepts a whole checkpoint dict as well."""
        kinds: dict[str, type[Spec]] = {
            "categorical": CategoricalFeature,
            "numeric": NumericFeature,
            "lookup": LookupFeature,
        }
        features = [kinds[f["kind"]].model_validate(f) for f in state["features"]]
        history = state.get("lookup_tables")
        return cls(
            features=features,
            inputs=[InputTensor.model_validate(t) for t in state["inputs"]],
            history=None if history is None else FrozenHistory.from_state(history),
        )

    def with_lookups(self, specs: Sequence[LookupFeature], history: FrozenHistory) -> FittedFeatures:
        """These features plus lookup features, appended to the numeric tensor (each
        followed by its unseen indicator), and the tables they read once exported."""
        columns = list(self.inputs[1].columns)
        for spec in specs:
            columns.append(spec.name)
            if spec.unseen_indicator:
                columns.append(spec.indicator_name)
        numeric = InputTensor(name=self.inputs[1].name, dtype="float32", columns=columns)
        return FittedFeatures(
            features=[*self.features, *specs],
            inputs=[self.inputs[0], numeric],
            history=history,
        )


def _category_values(decl: CategoricalDecl, column: np.ndarray) -> pd.Series:
    """The transformed category value of each training row (missing dropped)."""
    if decl.dtype == "string":
        values = pd.Series(column, dtype=object)
        values = values[values.notna()].astype(str)
    else:
        floats = pd.Series(column).astype("float64")
        ints = floats[floats.notna()].astype("int64").to_numpy()
        if decl.transform == "hour_of_day":
            ints = ints // 100
        elif decl.transform == "weekday":
            ints = weekday_from_yyyymmdd(ints)
        values = pd.Series(ints)
    missing = {str(v) if decl.dtype == "string" else int(v) for v in decl.missing_values}
    return values[~values.isin(list(missing))]


def fit_features(train: pd.DataFrame, decls: Sequence[Decl] = KUAIRAND_FEATURES) -> FittedFeatures:
    """Vocabularies and standardization constants from the training days only."""
    sources = list(dict.fromkeys(d.source for d in decls))
    cols = raw_columns(train, sources)
    specs: list[Spec] = []
    for decl in decls:
        if isinstance(decl, CategoricalDecl):
            values = _category_values(decl, cols[decl.source])
            counts = values.value_counts()
            kept = sorted(counts[counts >= decl.min_count].index.tolist())
            if decl.dtype == "string":
                vocab: list[int] | list[str] = [str(v) for v in kept]
                missing: list[int] | list[str] = [str(v) for v in decl.missing_values]
            else:
                vocab = [int(v) for v in kept]
                missing = [int(v) for v in decl.missing_values]
            specs.append(
                CategoricalFeature(
                    name=decl.name,
                    source=decl.source,
                    dtype="string" if decl.dtype == "string" else "int64",
                    transform=decl.transform,
                    vocabulary=vocab,
                    min_count=decl.min_count,
                    missing_values=missing,
                    cardinality=FIRST_VOCAB_INDEX + len(vocab),
                )
            )
        else:
            x = cols[decl.source].astype(np.float64)
            ok = np.isfinite(x) & ~np.isin(x, np.asarray(decl.missing_values, dtype=np.float64))
            v = x[ok]
            if decl.log1p:
                v = np.log1p(np.maximum(v, 0.0))
            std = float(v.std()) if v.size > 1 else 1.0
            specs.append(
                NumericFeature(
                    name=decl.name,
                    source=decl.source,
                    missing_values=list(decl.missing_values),
                    log1p=decl.log1p,
                    mean=float(v.mean()) if v.size else 0.0,
                    std=std if std > 1e-12 else 1.0,
                    fill=0.0,
                    missing_indicator=decl.missing_indicator,
                )
            )
    cat_cols = [s.name for s in specs if isinstance(s, CategoricalFeature)]
    num_cols: list[str] = []
    for s in specs:
        if isinstance(s, NumericFeature):
            num_cols.append(s.name)
            if s.missing_indicator:
                num_cols.append(s.indicator_name)
    inputs = [
        InputTensor(name=CATEGORICAL_INPUT, dtype="int64", columns=cat_cols),
        InputTensor(name=NUMERIC_INPUT, dtype="float32", columns=num_cols),
    ]
    # Sanity: the shared encoder must accept every training column as fitted.
    for s in specs:
        if isinstance(s, CategoricalFeature):
            encode_categorical(s, cols[s.source][:10])
    return FittedFeatures(features=specs, inputs=inputs)
