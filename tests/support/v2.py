"""Open Inference Protocol (v2) requests over real test-day rows, and the check of v2
answers against the independent reference."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tests.support.api import Reference, manifest, request_rows

LEVELS = [0.1, 0.5, 0.9]
EDGES = np.array([[0, 3], [3, 10], [10, np.inf]])


def tensor_columns(n: int, start: int = 0) -> dict[str, np.ndarray]:
    """Test-day columns typed as v2 tensors carry them: FP64 with NaN, INT64, BYTES text.

    Strings have no missing value in a tensor, so a missing one is sent as "" (unknown).
    """
    _, columns = request_rows(n, start)
    kinds = {f.source: f for f in manifest().features}
    out: dict[str, np.ndarray] = {}
    for name, col in columns.items():
        spec = kinds[name]
        if spec.kind == "categorical" and spec.dtype == "string":
            out[name] = np.array(["" if v is None else str(v) for v in col], dtype=object)
        elif col.dtype.kind == "f" or spec.kind == "numeric":
            out[name] = col.astype(np.float64)
        else:
            out[name] = col.astype(np.int64)
    return out


def datatype(arr: np.ndarray) -> str:
    return {"O": "BYTES", "f": "FP64", "i": "INT64"}[arr.dtype.kind]


def json_inputs(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return [
        {"name": k, "shape": [len(v)], "datatype": datatype(v), "data": v.tolist()}
        for k, v in columns.items()
    ]


def v2_body(n: int, start: int, **parameters: Any) -> bytes:
    """A v2 JSON infer request over test-day rows (NaN tokens for missing floats)."""
    columns = tensor_columns(n, start)
    doc: dict[str, Any] = {"inputs": json_inputs(columns)}
    if parameters:
        doc["parameters"] = parameters
    return json.dumps(doc).encode()


def check_against_reference(
    got: dict[str, np.ndarray],
    reference: Reference,
    columns: dict[str, np.ndarray],
    threshold: float,
    levels: list[float] | None = LEVELS,
    edges: np.ndarray | None = EDGES,
) -> None:
    dist = reference.distribution(columns)
    want = {
        "expected_watch_time_s": dist.mean(),
        "point_s": reference.point(dist),
        "std_s": dist.stddev(),
        "quick_skip_prob": dist.cdf(threshold),
    }
    if levels is not None:
        want["quantiles"] = dist.icdf(np.array(levels))
    if edges is not None:
        want["interval_mass"] = dist.interval_mass(edges)
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-9, err_msg=name)


def native_answer(port: int, n: int, start: int) -> dict[str, np.ndarray]:
    """A real server's native route answer for ``n`` test-day rows (quantiles ``LEVELS``,
    intervals ``EDGES``, threshold 4 s), by the v2 output names."""
    from tests.support.hostile import request

    features, _ = request_rows(n, start)
    body = {
        "features": features,
        "quantiles": LEVELS,
        "intervals": [[0, 3], [3, 10], [10, None]],
        "quick_skip_threshold_s": 4.0,
    }
    status, _, raw = request(
        port, "POST", "/v1/models/egmn/predict", json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200, raw
    doc = json.loads(raw)
    return {
        "expected_watch_time_s": np.array(doc["expected_watch_time_s"]),
        "point_s": np.array(doc["point_s"]),
        "std_s": np.array(doc["std_s"]),
        "quick_skip_prob": np.array(doc["quick_skip_prob"]),
        "quantiles": np.array(doc["quantiles"]["values_s"]),
        "interval_mass": np.array(doc["intervals"]["mass"]),
    }
