"""Ranking traffic for locust, built from the shipped test-day rows.

Each request scores the candidates of one ranking call: a number of rows drawn log-uniformly
between ``WATCHTIME_LOAD_MIN_ROWS`` and ``WATCHTIME_LOAD_MAX_ROWS`` (50 and 500 by default,
small requests more common than large ones, as in a ranking stack), taken at random from the
held-out test day of ``data/kuairand/`` with the raw columns the model's manifest names.
Native users post ``/v1/models/<model>/predict`` with columnar JSON (missing values as
``null``); v2 users post Open Inference Protocol tensors (``NaN`` marks a missing number,
``""`` a missing string). A response counts as a failure unless it is a 200 with one answer
per row sent.

Run it headless with ``loadtest/run_locust.py``, or with ``locust -f loadtest/locustfile.py``.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

import gevent
import numpy as np
from locust import HttpUser, constant, task

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from model_export.data import load_joined, raw_columns, split_by_day  # noqa: E402
from service.versions import highest_version_dir  # noqa: E402

MODEL = os.environ.get("WATCHTIME_LOAD_MODEL", "egmn")
# The version the service serves by default: the highest numeric one (from the standard-
# library module of that rule: the image of the load profile has no onnxruntime).
MODEL_DIR = Path(
    os.environ.get("WATCHTIME_LOAD_MODEL_DIR")
    or highest_version_dir(ROOT / "models" / MODEL)
    or ROOT / "models" / MODEL / "1"
)
MIN_ROWS = int(os.environ.get("WATCHTIME_LOAD_MIN_ROWS", "50"))
MAX_ROWS = int(os.environ.get("WATCHTIME_LOAD_MAX_ROWS", "500"))
QUANTILES = [0.1, 0.5, 0.9]
INTERVALS: list[list[float | None]] = [[0, 3], [3, 10], [10, None]]
# Bodies are encoded here, not by requests, whose encoder refuses the NaN tokens that v2
# JSON tensors use for missing numbers.
JSON_HEADERS = {"content-type": "application/json"}


class Candidates:
    """The test day's rows, held column by column in the two wire forms, drawn at random."""

    def __init__(self) -> None:
        manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
        features = manifest["features"]
        sources = list(dict.fromkeys(f["source"] for f in features))
        text = {
            f["source"] for f in features if f["kind"] == "categorical" and f["dtype"] == "string"
        }
        rows = split_by_day(load_joined()).test
        columns = raw_columns(rows, sources)
        self.n = len(rows)
        self.native: dict[str, np.ndarray] = {}
        self.tensors: dict[str, tuple[str, np.ndarray]] = {}
        for name, col in columns.items():
            if col.dtype.kind == "f":
                as_json = col.astype(object)
                as_json[np.isnan(col)] = None
                self.native[name] = as_json
            else:
                self.native[name] = col
            if name in text:
                self.tensors[name] = (
                    "BYTES",
                    np.array(["" if v is None else str(v) for v in col], dtype=object),
                )
            elif col.dtype.kind == "f" or col.dtype.kind == "O":
                self.tensors[name] = ("FP64", col.astype(np.float64))
            else:
                self.tensors[name] = ("INT64", col.astype(np.int64))

    def draw(self, rng: random.Random) -> np.ndarray:
        """Row indices of one ranking request: log-uniform size in [MIN_ROWS, MAX_ROWS]."""
        size = round(math.exp(rng.uniform(math.log(MIN_ROWS), math.log(MAX_ROWS))))
        size = max(MIN_ROWS, min(MAX_ROWS, size, self.n))
        return np.array(rng.sample(range(self.n), size))

    def native_body(self, idx: np.ndarray) -> dict[str, Any]:
        return {
            "features": {name: col[idx].tolist() for name, col in self.native.items()},
            "quantiles": QUANTILES,
            "intervals": INTERVALS,
        }

    def v2_body(self, idx: np.ndarray) -> dict[str, Any]:
        inputs = [
            {"name": name, "shape": [len(idx)], "datatype": kind, "data": col[idx].tolist()}
            for name, (kind, col) in self.tensors.items()
        ]
        parameters = {"quantiles": QUANTILES, "intervals": INTERVALS}
        return {"inputs": inputs, "parameters": parameters}


CANDIDATES = Candidates()
# Loading the rows blocked gevent's loop for seconds; without this its cached clock is that
# old, and locust's --run-time timer, armed from it, would fire at once.
gevent.get_hub().loop.update_now()


def _answered_rows(path: str, body: dict[str, Any]) -> int:
    """Rows in a 200 answer: the native list's length, or the v2 output tensor's first dim."""
    if path.endswith("/predict"):
        return len(body["expected_watch_time_s"])
    outputs = {o["name"]: o for o in body["outputs"]}
    return int(outputs["expected_watch_time_s"]["shape"][0])


class _RankingUser(HttpUser):
    """One ranking call after another; a call fails unless every row sent is answered."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()

    def _post(self, name: str, body: dict[str, Any], rows: int) -> None:
        path = name.replace("[model]", MODEL)
        with self.client.post(
            path, data=json.dumps(body), headers=JSON_HEADERS, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
            elif _answered_rows(path, response.json()) != rows:
                response.failure("answer has a different number of rows")


class NativeRankingUser(_RankingUser):
    """A ranking service calling the native API with columnar JSON."""

    weight = 3

    @task
    def predict(self) -> None:
        idx = CANDIDATES.draw(self.rng)
        self._post("/v1/models/[model]/predict", CANDIDATES.native_body(idx), len(idx))


class V2RankingUser(_RankingUser):
    """A client of the Open Inference Protocol (KServe v2) JSON route."""

    weight = 1

    @task
    def infer(self) -> None:
        idx = CANDIDATES.draw(self.rng)
        self._post("/v2/models/[model]/infer", CANDIDATES.v2_body(idx), len(idx))
