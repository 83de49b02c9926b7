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

from model_export.data.features import FittedFeatures, fit_features
from model_export.data.kuairand import (
    DEFAULT_DATA_DIR,
    Split,
    labels,
    load_joined,
    raw_columns,
    split_by_day,
)
from service.manifest import TrainingWindow
from service.runtime.features import encode_columns, required_columns


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


def encode(fitted: FittedFeatures, df: pd.DataFrame) -> Encoded:
    """Model tensors of a frame through the shared service encoder (one implementation)."""
    cols = raw_columns(df, required_columns(fitted.features))
    return Encoded.from_numpy(encode_columns(fitted.features, fitted.inputs, cols), labels(df))


def prepare(data_dir: Path = DEFAULT_DATA_DIR) -> Prepared:
    """Load, split by day, fit the feature schema on the training days and encode every day."""
    return prepare_split(split_by_day(load_joined(data_dir)))


def prepare_split(split: Split) -> Prepared:
    """Fit the feature schema on a split's training days and encode each of its day ranges."""
    fitted = fit_features(split.train)
    return Prepared(
        split=split,
        fitted=fitted,
        train=encode(fitted, split.train),
        validation=encode(fitted, split.validation),
        test=encode(fitted, split.test),
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
