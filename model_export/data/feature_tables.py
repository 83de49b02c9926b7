"""The feature store's tables: the KuaiRand user and video tables as the service looks them up.

``python -m model_export feature-tables`` writes ``feature_store/kuairand.npz`` (plain numpy
arrays, no pickle; read by ``service.runtime.store``) with the KuaiRand licence and credit
beside it. The values are those the log rows carry after :func:`~model_export.data.kuairand.
load_joined`, so an ids-only request is answered exactly as the same request with every
column:

- ``user``, keyed by ``user_id``: every column of ``user_features_pure.csv``.
- ``video``, keyed by ``video_id``: ``author_id``, ``tag``, ``duration_ms``, ``upload_day``
  (the upload date as days since 1970-01-01) and the columns the log rows are joined with (``video_type``, ``upload_type``,
  ``music_type``, ``server_width``, ``server_height``). The logs write a video without a tag
  as ``"unknown"`` and one without a duration as ``duration_ms`` 0; the table does the same.
- ``freshness_days`` is derived at request time: the days from ``upload_day`` to the
  request's ``date``, as the logs compute it.

Each column is stored in the narrowest exact type (small integers, float32 where every value
is a float32), text as codes into its sorted distinct values.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from model_export.data.attribution import KUAIRAND
from model_export.data.kuairand import DEFAULT_DATA_DIR, VIDEO_TABLE_COLUMNS
from service.runtime.store import DerivedColumn, EntitySchema, Kind, StoreSchema

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "feature_store" / "kuairand.npz"

ATTRIBUTION = (
    f"Derived from {KUAIRAND.dataset} ({KUAIRAND.source_url}), {KUAIRAND.license} "
    f"({KUAIRAND.license_url}). {KUAIRAND.citation} Changes: the user and video tables "
    "re-encoded as numpy arrays, video tags and durations written as the logs write them."
)


def _kind(column: pd.Series) -> Kind:
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(
        column.dtype
    ):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        return "int" if not np.isnan(values).any() else "float"
    return "text"


def _narrow_int(values: np.ndarray) -> np.ndarray:
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if values.size == 0 or (values.min() >= info.min and values.max() <= info.max):
            return values.astype(dtype)
    return values.astype(np.int64)


def _column_arrays(prefix: str, column: pd.Series, kind: Kind) -> dict[str, np.ndarray]:
    if kind == "int":
        return {prefix: _narrow_int(column.to_numpy(dtype=np.int64))}
    if kind == "float":
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        small = values.astype(np.float32)
        exact = np.array_equal(small.astype(np.float64), values, equal_nan=True)
        return {prefix: small if exact else values}
    text = column.astype(object).to_numpy()
    missing = pd.isna(text)
    labels = np.unique(text[~missing].astype(str))
    codes = np.full(text.shape, -1, dtype=np.int64)
    codes[~missing] = np.searchsorted(labels, text[~missing].astype(str))
    return {prefix: _narrow_int(codes), f"{prefix}.categories": labels.astype(np.str_)}


def _tables(data_dir: Path) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    users = pd.read_csv(data_dir / "user_features_pure.csv")
    videos = pd.read_csv(data_dir / "video_features_basic_pure.csv")
    video = pd.DataFrame(
        {
            "video_id": videos["video_id"],
            "author_id": videos["author_id"],
            "tag": videos["tag"].astype(object).where(videos["tag"].notna(), "unknown"),
            "duration_ms": videos["video_duration"].fillna(0.0).round().astype(np.int64),
            "upload_day": (
                pd.to_datetime(videos["upload_dt"]) - pd.Timestamp("1970-01-01")
            ).dt.days.astype(np.int64),
            **{c: videos[c] for c in VIDEO_TABLE_COLUMNS},
        }
    )
    return {"user": users, "video": video}, {"user": "user_id", "video": "video_id"}


def build_tables(data_dir: Path = DEFAULT_DATA_DIR) -> tuple[StoreSchema, dict[str, np.ndarray]]:
    """The schema and the arrays of the tables file (the schema's version: a content hash)."""
    frames, keys = _tables(data_dir)
    arrays: dict[str, np.ndarray] = {}
    entities: list[EntitySchema] = []
    for name, frame in frames.items():
        key = keys[name]
        frame = frame.sort_values(key, kind="stable").reset_index(drop=True)
        if not frame[key].is_unique:
            raise ValueError(f"{name} table: {key} is not unique")
        arrays[f"{name}.ids"] = _narrow_int(frame[key].to_numpy(dtype=np.int64))
        kinds: dict[str, Kind] = {}
        for column in frame.columns:
            if column == key:
                continue
            kinds[column] = _kind(frame[column])
            arrays.update(_column_arrays(f"{name}.{column}", frame[column], kinds[column]))
        entities.append(EntitySchema(name, key, kinds))
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    derived = (DerivedColumn("freshness_days", "days_since", "upload_day", "date"),)
    schema = StoreSchema(tuple(entities), derived, digest.hexdigest()[:16], ATTRIBUTION)
    arrays["schema"] = np.array(schema.to_json())
    return schema, arrays


def write_feature_tables(data_dir: Path = DEFAULT_DATA_DIR, out: Path = DEFAULT_OUT) -> Path:
    """Write the tables file and, beside it, the data's licence; returns the file's path."""
    _, arrays = build_tables(data_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    out.write_bytes(buffer.getvalue())
    shutil.copyfile(data_dir / "LICENSE", out.parent / "LICENSE")
    return out
