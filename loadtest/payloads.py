"""Request bodies built from the shipped test-day rows, for the locust load and the benchmark.

Both send the held-out day of ``data/kuairand/`` with the raw columns a model's manifest
names, in the wire forms of the service: native columnar JSON (``null`` marks a missing
value) and Open Inference Protocol (v2) tensors, as JSON (``NaN`` marks a missing number,
``""`` a missing string) or with the binary extension. The benchmark's peers take the
encoded tensors instead, as JSON lists. One module builds them all, so that the load and the
benchmark cannot drift apart in what a request holds.

No onnxruntime here: the locust image does not have it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from model_export.data import load_joined, raw_columns, split_by_day

QUANTILES = [0.1, 0.5, 0.9]
INTERVALS: list[list[float | None]] = [[0.0, 3.0], [3.0, 10.0], [10.0, None]]
#: the columns of an ids-only request: the service looks up every other column by id
REQUEST_TIME = ["user_id", "video_id", "tab", "hourmin", "date"]

#: which of the held rows a body carries: indices (a ranking call's draw) or a slice
Rows = npt.NDArray[np.intp] | slice


def manifest_sources(model_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The raw columns a model reads, in first-use order, and each one's kind.

    Read from ``manifest.json`` with the standard library, for the locust image; the rule is
    the model repository's: a column is "string" only when every feature reads it as text.
    """
    manifest = json.loads((model_dir / "manifest.json").read_text())
    kinds: dict[str, str] = {}
    for feature in manifest["features"]:
        text = feature["kind"] == "categorical" and feature["dtype"] == "string"
        source = feature["source"]
        kinds[source] = "string" if text and kinds.get(source) != "number" else "number"
    return list(kinds), kinds


@cache
def test_day() -> pd.DataFrame:
    """The held-out test day, joined once per process (the benchmark reads it several times)."""
    return split_by_day(load_joined()).test


def _json_column(col: np.ndarray) -> np.ndarray:
    """Values as JSON writes them: missing numbers become None (``null``)."""
    if col.dtype.kind != "f":
        return col
    as_json = col.astype(object)
    as_json[np.isnan(col)] = None
    return as_json


def _tensor(col: np.ndarray, kind: str) -> tuple[str, np.ndarray]:
    """A v2 tensor's datatype and values: NaN marks a missing number, "" a missing string."""
    if kind == "string":
        return "BYTES", np.array(["" if v is None else str(v) for v in col], dtype=object)
    if col.dtype.kind in "fO":
        return "FP64", col.astype(np.float64)
    return "INT64", col.astype(np.int64)


def _binary(datatype: str, values: np.ndarray) -> bytes:
    """A tensor in the binary extension: little-endian numbers, length-prefixed strings."""
    if datatype == "BYTES":
        texts = [str(v).encode() for v in values]
        return b"".join(struct.pack("<I", len(t)) + t for t in texts)
    return values.astype("<f8" if datatype == "FP64" else "<i8").tobytes()


class HeldOutRows:
    """Test-day rows held column by column in every wire form, ready to be sliced into bodies.

    ``count`` keeps the first rows only, and their columns are typed from those rows alone
    (an integer column with no missing value among them stays integer), as a client holding
    just those rows would send them.
    """

    def __init__(
        self, sources: list[str], kinds: Mapping[str, str], count: int | None = None
    ) -> None:
        frame = test_day() if count is None else test_day().iloc[:count]
        #: the numpy columns that decoding a request yields
        self.columns = raw_columns(frame, sources)
        self.n = len(frame)
        self.native = {name: _json_column(col) for name, col in self.columns.items()}
        self.tensors = {name: _tensor(col, kinds[name]) for name, col in self.columns.items()}

    def native_body(self, rows: Rows, only: list[str] | None = None) -> dict[str, Any]:
        """A native ``/predict`` body: columnar JSON, of every column or ``only`` those."""
        names = list(self.native) if only is None else only
        return {
            "features": {name: self.native[name][rows].tolist() for name in names},
            "quantiles": QUANTILES,
            "intervals": INTERVALS,
        }

    def _inputs(self, rows: Rows) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """Each v2 input's description without its data, and the values it carries."""
        for name, (datatype, col) in self.tensors.items():
            values = col[rows]
            yield {"name": name, "shape": [len(values)], "datatype": datatype}, values

    def v2_json_body(self, rows: Rows) -> dict[str, Any]:
        """A v2 ``infer`` body with JSON tensors."""
        inputs = [{**spec, "data": values.tolist()} for spec, values in self._inputs(rows)]
        return {"inputs": inputs, "parameters": {"quantiles": QUANTILES, "intervals": INTERVALS}}

    def v2_binary_body(self, rows: Rows) -> tuple[bytes, int]:
        """A v2 binary-extension body, every output asked back as binary too, and the length
        of its JSON header (the ``Inference-Header-Content-Length`` header)."""
        inputs, blobs = [], []
        for spec, values in self._inputs(rows):
            blob = _binary(spec["datatype"], values)
            inputs.append({**spec, "parameters": {"binary_data_size": len(blob)}})
            blobs.append(blob)
        parameters = {"quantiles": QUANTILES, "intervals": INTERVALS, "binary_data_output": True}
        header = json.dumps({"inputs": inputs, "parameters": parameters}).encode()
        return header + b"".join(blobs), len(header)


@dataclass(frozen=True)
class Body:
    """One prebuilt request body and what wrk must say of it in the headers."""

    data: bytes
    content_type: str = "application/json"
    #: the JSON header's length of a v2 binary body
    header_length: int | None = None


BodyName = Literal["native256", "native1", "ids256", "v2_256", "peer256", "peer1"]


def benchmark_bodies(rows: HeldOutRows, encoded: Mapping[str, np.ndarray]) -> dict[BodyName, Body]:
    """Every body of the benchmark: all the held rows, or the first of them.

    ``encoded`` is the model's input tensors for the same rows, which the peers take.
    """
    v2_body, v2_header = rows.v2_binary_body(slice(None))

    def peer(count: int) -> Body:
        return Body(json.dumps({k: v[:count].tolist() for k, v in encoded.items()}).encode())

    return {
        "native256": Body(json.dumps(rows.native_body(slice(None))).encode()),
        "native1": Body(json.dumps(rows.native_body(slice(0, 1))).encode()),
        "ids256": Body(json.dumps(rows.native_body(slice(None), REQUEST_TIME)).encode()),
        "v2_256": Body(v2_body, "application/octet-stream", v2_header),
        "peer256": peer(rows.n),
        "peer1": peer(1),
    }
