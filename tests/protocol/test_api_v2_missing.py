"""Missing values in integer inputs over v2: an INT64 input sent as FP64 or FP32 with NaN.

Real rows of the test day leave integer columns empty (``onehot_feat4`` in 612 of 17,600
rows, ``onehot_feat12``-``17``, ``music_type``). Tensors have no null, so the service accepts
such a column as a floating-point tensor where NaN marks the missing value, and the model
metadata lists those inputs in the parameter ``nullable_inputs``. The Triton client sends
real rows that way; the answers must be those of the native API with ``null`` in the same
places, and of an independent reference.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from model_export.data import raw_columns
from tests.support.api import (
    LiveServer,
    Reference,
    held_out_day,
    json_columns,
    manifest,
)

http = pytest.importorskip("tritonclient.http")

NAMES = ["expected_watch_time_s", "point_s", "std_s", "quick_skip_prob", "quantiles"]
LEVELS = [0.1, 0.5, 0.9]


def _rows() -> pd.DataFrame:
    """Test-day rows with onehot_feat4 missing, and as many with it present."""
    day = held_out_day()
    missing = day[day["onehot_feat4"].isna()].head(24)
    present = day[day["onehot_feat4"].notna()].head(24)
    rows = pd.concat([missing, present])
    assert len(missing) == 24
    return rows


def _tensors(
    columns: dict[str, np.ndarray], float_type: str, binary: bool
) -> tuple[list[Any], list[str]]:
    """Triton inputs: integer columns with a missing value as ``float_type`` with NaN."""
    kinds = {f.source: f for f in manifest().features}
    inputs, as_float = [], []
    for name, col in columns.items():
        spec = kinds[name]
        if spec.kind == "categorical" and spec.dtype == "string":
            assert not any(v is None for v in col), name  # no missing text in these rows
            arr = np.array([str(v) for v in col], dtype=object)
            datatype = "BYTES"
        elif spec.kind == "categorical" and col.dtype.kind == "f" and np.isnan(col).any():
            arr = col.astype(np.float64 if float_type == "FP64" else np.float32)
            datatype = float_type
            as_float.append(name)
        elif col.dtype.kind == "f" or spec.kind == "numeric":
            arr, datatype = col.astype(np.float64), "FP64"
        else:
            arr, datatype = col.astype(np.int64), "INT64"
        tensor = http.InferInput(name, [len(arr)], datatype)
        tensor.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(tensor)
    return inputs, as_float


def test_metadata_names_the_nullable_inputs(live: LiveServer) -> None:
    triton = http.InferenceServerClient(url=live.address)
    try:
        meta = triton.get_model_metadata("egmn")
    finally:
        triton.close()
    nullable = meta["parameters"]["nullable_inputs"].split(",")
    declared = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert declared["onehot_feat4"] == "INT64" and "onehot_feat4" in nullable
    assert declared["duration_ms"] == "FP64" and "duration_ms" in nullable
    assert set(nullable) == {n for n, t in declared.items() if t != "BYTES"}
    assert "tag" not in nullable and declared["tag"] == "BYTES"


@pytest.mark.parametrize("float_type", ["FP64", "FP32"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_missing_integer_values_as_nan(live: LiveServer, float_type: str, binary: bool) -> None:
    rows = _rows()
    sources = manifest().source_columns()
    raw = raw_columns(rows, sources)
    triton = http.InferenceServerClient(url=live.address)
    try:
        inputs, as_float = _tensors(raw, float_type, binary)
        assert "onehot_feat4" in as_float
        outputs = [http.InferRequestedOutput(n, binary_data=binary) for n in NAMES]
        result = triton.infer("egmn", inputs, outputs=outputs, parameters={"quantiles": LEVELS})
        got = {n: result.as_numpy(n) for n in NAMES}
    finally:
        triton.close()

    # The native API, with null where the value is missing, answers the same rows the same.
    body = {"features": json_columns(rows, sources), "quantiles": LEVELS}
    assert None in body["features"]["onehot_feat4"]
    native = httpx.post(f"http://{live.address}/v1/predict", json=body, timeout=60).json()
    for name in ("expected_watch_time_s", "point_s", "std_s", "quick_skip_prob"):
        np.testing.assert_allclose(got[name], native[name], rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(got["quantiles"], native["quantiles"]["values_s"], rtol=1e-12)

    # And an independent reference (its own session, NaN columns as training read them).
    dist = Reference().distribution(raw)
    np.testing.assert_allclose(got["expected_watch_time_s"], dist.mean(), rtol=1e-6)

    # Missing is not the same as any present value: the missing rows differ from the same
    # rows with onehot_feat4 filled in.
    filled = {
        **raw,
        "onehot_feat4": np.where(np.isnan(raw["onehot_feat4"]), 0.0, raw["onehot_feat4"]),
    }
    changed = Reference().distribution(filled).mean() != dist.mean()
    assert changed[:24].any() and not changed[24:].any()
