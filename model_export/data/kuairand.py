"""Loading the KuaiRand slice: interactions joined with the user and video tables, split by day.

The joined frame holds exactly what a client would send (raw log columns plus the user and
video table columns under their own names) and the label. Missing values are kept as missing
(``None`` in object columns, ``NaN`` in numeric ones) so that the manifest's missing-value rule
is exercised at training time exactly as at serving time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "kuairand"
LABEL = "watch_time_s"

# Post-view feedback: labels of other tasks, never inputs (they leak the outcome).
FEEDBACK_COLUMNS = (
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
    "profile_stay_time",
    "comment_stay_time",
    "is_profile_enter",
    "play_time_ms",
)

# Video table columns that the interactions do not already carry (author_id, tag and
# video_duration come with the log rows; upload_dt duplicates upload_date).
VIDEO_TABLE_COLUMNS = (
    "video_type",
    "upload_type",
    "music_type",
    "server_width",
    "server_height",
)


@dataclass(frozen=True)
class Split:
    """A time split: training days, one validation day, one test day."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    train_dates: list[int]
    validation_date: int
    test_date: int


def load_joined(data_dir: Path = DEFAULT_DATA_DIR) -> pd.DataFrame:
    """Interactions left-joined with the user and video tables; label in seconds."""
    inter = pd.read_parquet(data_dir / "interactions.parquet")
    users = pd.read_csv(data_dir / "user_features_pure.csv")
    videos = pd.read_csv(data_dir / "video_features_basic_pure.csv")
    videos = videos[["video_id", *VIDEO_TABLE_COLUMNS]]
    df = inter.merge(users, on="user_id", how="left", validate="many_to_one")
    df = df.merge(videos, on="video_id", how="left", validate="many_to_one")
    df[LABEL] = df["play_time_ms"].astype("float64") / 1000.0
    return df.sort_values("time_ms", kind="stable").reset_index(drop=True)


def split_by_day(df: pd.DataFrame) -> Split:
    """Last day = test, the day before = validation, all earlier days = training."""
    dates = sorted(int(d) for d in df["date"].unique())
    if len(dates) < 3:
        raise ValueError(f"need at least three days to split by time, got {dates}")
    test_date, validation_date = dates[-1], dates[-2]
    day = df["date"].astype("int64")
    return Split(
        train=df[day < validation_date].reset_index(drop=True),
        validation=df[day == validation_date].reset_index(drop=True),
        test=df[day == test_date].reset_index(drop=True),
        train_dates=dates[:-2],
        validation_date=validation_date,
        test_date=test_date,
    )


def raw_columns(df: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """Plain numpy columns as a client would send them: None for missing text, NaN for numbers.

    Nullable pandas dtypes (Int64, string[pyarrow]) are flattened here so that the shared
    feature code in ``service`` sees the same array types as in a decoded request.
    """
    out: dict[str, np.ndarray] = {}
    for name in names:
        col = df[name]
        if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            if col.isna().any() or pd.api.types.is_float_dtype(col.dtype):
                out[name] = col.astype("float64").to_numpy(na_value=np.nan)
            else:
                out[name] = col.astype("int64").to_numpy()
        else:
            values = col.astype(object).to_numpy()
            out[name] = np.where(pd.isna(values), None, values).astype(object)
    return out


def labels(df: pd.DataFrame) -> np.ndarray:
    """Watch time in seconds as float64."""
    return df[LABEL].to_numpy(dtype=np.float64)
