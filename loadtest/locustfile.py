"""Ranking traffic for locust, built from the shipped test-day rows.

Each request scores the candidates of one ranking call: a number of rows drawn log-uniformly
between ``WATCHTIME_LOAD_MIN_ROWS`` and ``WATCHTIME_LOAD_MAX_ROWS`` (50 and 500 by default,
small requests more common than large ones, as in a ranking stack), taken at random from the
held-out test day of ``data/kuairand/`` with the raw columns the model's manifest names.
Native users post ``/v1/models/<model>/predict`` with columnar JSON (missing values as
``null``); v2 users post Open Inference Protocol tensors (``NaN`` marks a missing number,
``""`` a missing string). A response counts as a failure unless it is a 200 with one answer
per row sent.

Run it headless with ``python -m loadtest.run_locust``, or with ``locust -f
loadtest/locustfile.py`` from the repository root (the image's working directory, ``/app``):
locust puts its working directory on ``sys.path``, which is how ``loadtest.payloads`` resolves.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import gevent
import numpy as np
from locust import HttpUser, constant, task

from loadtest.paths import MODELS
from loadtest.payloads import HeldOutRows, manifest_sources
from service.versions import highest_version_dir

MODEL = os.environ.get("WATCHTIME_LOAD_MODEL", "egmn")
# The version the service serves by default: the highest numeric one (from the standard-
# library module of that rule: the image of the load profile has no onnxruntime).
MODEL_DIR = Path(
    os.environ.get("WATCHTIME_LOAD_MODEL_DIR")
    or highest_version_dir(MODELS / MODEL)
    or MODELS / MODEL / "1"
)
MIN_ROWS = int(os.environ.get("WATCHTIME_LOAD_MIN_ROWS", "50"))
MAX_ROWS = int(os.environ.get("WATCHTIME_LOAD_MAX_ROWS", "500"))
# Bodies are encoded here, not by requests, whose encoder refuses the NaN tokens that v2
# JSON tensors use for missing numbers.
JSON_HEADERS = {"content-type": "application/json"}

CANDIDATES = HeldOutRows(*manifest_sources(MODEL_DIR))
# Loading the rows blocked gevent's loop for seconds; without this its cached clock is that
# old, and locust's --run-time timer, armed from it, would fire at once.
gevent.get_hub().loop.update_now()


def draw(rng: random.Random) -> np.ndarray:
    """Row indices of one ranking request: log-uniform size in [MIN_ROWS, MAX_ROWS]."""
    size = round(math.exp(rng.uniform(math.log(MIN_ROWS), math.log(MAX_ROWS))))
    size = max(MIN_ROWS, min(MAX_ROWS, size, CANDIDATES.n))
    return np.array(rng.sample(range(CANDIDATES.n), size))


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
        idx = draw(self.rng)
        self._post("/v1/models/[model]/predict", CANDIDATES.native_body(idx), len(idx))


class V2RankingUser(_RankingUser):
    """A client of the Open Inference Protocol (KServe v2) JSON route."""

    weight = 1

    @task
    def infer(self) -> None:
        idx = draw(self.rng)
        self._post("/v2/models/[model]/infer", CANDIDATES.v2_json_body(idx), len(idx))
