"""The no-model reference: each video's median watch time on the training days."""

from __future__ import annotations

import numpy as np
import pandas as pd

from model_export.data.kuairand import LABEL, labels
from model_export.data.prepared import Prepared
from model_export.evaluation.metrics import evaluate_point

REFERENCE = "per_video_median"
"""The reference's name in the tables and in a manifest's references."""


def per_video_median(train: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Training-day median of each row's video; the global training median for unseen videos.

    This is the statistic that needs no model: the quality bar asks EGMN to beat it.
    """
    medians = train.groupby("video_id")[LABEL].median()
    fallback = float(train[LABEL].median())
    return rows["video_id"].map(medians).astype("float64").fillna(fallback).to_numpy()


def baseline_metrics(prepared: Prepared) -> dict[str, float]:
    """MAE and XAUC of the per-video training median on the test day."""
    pred = per_video_median(prepared.split.train, prepared.split.test)
    return evaluate_point(pred, labels(prepared.split.test))
