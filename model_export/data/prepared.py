"""The split as model inputs: every day range encoded by the service's own feature code.

``Prepared`` is what every trainer starts from (EGMN and each baseline alike), so that all
models read the same tensors: features fitted on the training days only, encoded by
``service.runtime.features`` exactly as a request is at serving time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from model_export.data.features import FittedFeatures, FrozenHistory, fit_features
from model_export.data.history import (
    PRIOR_VIEWS,
    HistoryOptions,
    fit_history_features,
    point_in_time_tables,
)
from model_export.data.kuairand import (
    DEFAULT_DATA_DIR,
    Split,
    labels,
    load_joined,
    raw_columns,
    split_by_day,
)
from service.manifest import LookupFeature, TrainingWindow
from service.runtime.features import encode_columns, required_columns
from service.runtime.lookup import LookupTables


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
class Prepared:
    """The split, its fitted features and the encoded tensors of each day range."""

    split: Split
    fitted: FittedFeatures
    train: Encoded
    validation: Encoded
    test: Encoded
    #: with history features: each day's point-in-time tables (of the days before it)
    history: dict[int, LookupTables] | None = None


def encode(
    fitted: FittedFeatures, df: pd.DataFrame, by_day: dict[int, LookupTables] | None = None
) -> Encoded:
    """Model tensors of a frame through the shared service encoder (one implementation).

    With history features each day's rows are encoded with that day's tables (``by_day``);
    without ``by_day``, with the frozen tables the model ships, which only rows after their
    cut-off may read (the others would see their own labels): anything else is refused.
    """
    names = required_columns(fitted.features)
    if not any(isinstance(f, LookupFeature) for f in fitted.features):
        cols = raw_columns(df, names)
        return Encoded.from_numpy(encode_columns(fitted.features, fitted.inputs, cols), labels(df))
    day = df["date"].astype("int64").to_numpy()
    if by_day is None:
        if fitted.history is None:
            raise ValueError("lookup features without tables")
        if day.size and int(day.min()) <= fitted.history.cutoff_date:
            raise ValueError(
                f"rows of {int(day.min())} would read history tables that hold their own day "
                f"(cut-off {fitted.history.cutoff_date}); pass the point-in-time tables"
            )
        by_day = {int(d): fitted.history.tables for d in np.unique(day)}
    parts: dict[str, list[np.ndarray]] = {t.name: [] for t in fitted.inputs}
    order: list[np.ndarray] = []
    for d in np.unique(day):
        rows = np.flatnonzero(day == d)
        cols = raw_columns(df.iloc[rows], names)
        tensors = encode_columns(fitted.features, fitted.inputs, cols, by_day[int(d)])
        for name, tensor in tensors.items():
            parts[name].append(tensor)
        order.append(rows)
    inverse = np.argsort(np.concatenate(order), kind="stable")
    inputs = {name: np.concatenate(p)[inverse] for name, p in parts.items()}
    return Encoded.from_numpy(inputs, labels(df))


def prepare(
    data_dir: Path = DEFAULT_DATA_DIR,
    history: bool = False,
    history_options: HistoryOptions | None = None,
) -> Prepared:
    """Load, split by day, fit the feature schema on the training days and encode every day."""
    split = split_by_day(load_joined(data_dir))
    return prepare_split(split, history=history, history_options=history_options)


def history_tables(
    split: Split, options: HistoryOptions | None = None
) -> dict[int, LookupTables]:
    """Each day's point-in-time tables, from the training and validation rows only (the test
    day's labels cannot enter any table, whatever the dates)."""
    seen = pd.concat([split.train, split.validation], ignore_index=True)
    dates = [*split.train_dates, split.validation_date, split.test_date]
    return point_in_time_tables(seen, dates, options)


def prepare_split(
    split: Split, history: bool = False, history_options: HistoryOptions | None = None
) -> Prepared:
    """Fit the feature schema on a split's training days and encode each of its day ranges.

    ``history`` adds the point-in-time history features (:mod:`model_export.data.history`,
    in the variant ``history_options`` names); the tables the model ships are the test
    day's: every day up to the validation day (the last ones, with a window).
    """
    fitted = fit_features(split.train)
    by_day = None
    if history:
        by_day = history_tables(split, history_options)
        frozen = FrozenHistory(by_day[split.test_date], split.validation_date, PRIOR_VIEWS)
        specs = fit_history_features(split.train, by_day, frozen.tables, history_options)
        fitted = fitted.with_lookups(specs, frozen)
    return Prepared(
        split=split,
        fitted=fitted,
        train=encode(fitted, split.train, by_day),
        validation=encode(fitted, split.validation, by_day),
        test=encode(fitted, split.test, by_day),
        history=by_day,
    )


def training_window(split: Split) -> TrainingWindow:
    """The days behind a model, for its manifest."""
    return TrainingWindow(
        train_dates=split.train_dates,
        validation_date=split.validation_date,
        test_date=split.test_date,
        rows_train=len(split.train),
        rows_validation=len(split.validation),
        rows_test=len(split.test),
    )
