"""``/metrics``: every contracted name and label, series at zero from start-up, values that
move when they should (read back with prometheus-client's parser), and ``promtool``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from service.runtime.repository import ModelRepository
from tests.support.api import AppClient, app_client, request_rows
from tests.support.metrics import delta, parse, scrape, value

MODEL = "egmn"
PREDICT = f"/v1/models/{MODEL}/predict"

# The contract, as written in the design's metric table (name, type, labels).
CONTRACT = {
    "watchtime_requests": ("counter", {"model", "endpoint", "status"}),
    "watchtime_request_duration_seconds": ("histogram", {"model", "endpoint"}),
    "watchtime_queue_duration_seconds": ("histogram", {"model"}),
    "watchtime_inference_duration_seconds": ("histogram", {"model"}),
    "watchtime_postprocess_duration_seconds": ("histogram", {"model"}),
    "watchtime_batch_rows": ("histogram", {"model"}),
    "watchtime_request_rows": ("histogram", {"model"}),
    "watchtime_rows": ("counter", {"model"}),
    "watchtime_batches": ("counter", {"model"}),
    "watchtime_queue_rows": ("gauge", {"model"}),
    "watchtime_inflight_requests": ("gauge", set()),
    "watchtime_rejected": ("counter", {"model", "reason"}),
    "watchtime_model_info": ("gauge", {"model", "version", "family"}),
    "watchtime_model_load_failures": ("counter", {"model", "version"}),
    "watchtime_model_refused": ("gauge", {"model", "version"}),
    "watchtime_predicted_watch_time_seconds": ("histogram", {"model"}),
    "watchtime_predicted_quick_skip_prob": ("histogram", {"model"}),
}


@pytest.fixture(scope="module")
def client(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository, max_request_rows=50)


def test_every_contracted_metric_exists_with_its_labels(client: AppClient) -> None:
    r = client.get("/metrics")
    samples, types = parse(r.text)
    for name, (kind, labels) in CONTRACT.items():
        assert types.get(name) == kind, name
        own = [lab for (sample, lab) in samples if sample.startswith(name)]
        assert own, f"{name} has no series at start-up"
        for lab in own:
            assert {k for k, _ in lab} - {"le"} == labels, (name, lab)
    for reason in ("queue_full", "deadline", "invalid", "too_large"):
        value(samples, "watchtime_rejected_total", model=MODEL, reason=reason)
    for endpoint, statuses in {
        "predict": ("200", "404", "413", "422", "429", "503", "504"),
        "infer": ("200", "400", "404", "413", "429", "503", "504"),
    }.items():
        for status in statuses:
            value(
                samples, "watchtime_requests_total", model=MODEL, endpoint=endpoint, status=status
            )
    assert value(samples, "watchtime_model_info", model=MODEL, version="1", family="egm") == 1


def test_latency_and_prediction_buckets(client: AppClient) -> None:
    samples, _ = parse(client.get("/metrics").text)

    def bounds(name: str) -> list[float]:
        return sorted(
            float(dict(lab)["le"])
            for sample, lab in samples
            if sample == f"{name}_bucket"
            and dict(lab).get("model") == MODEL
            and dict(lab).get("endpoint", "predict") == "predict"
        )

    for name in (
        "watchtime_request_duration_seconds",
        "watchtime_queue_duration_seconds",
        "watchtime_inference_duration_seconds",
        "watchtime_postprocess_duration_seconds",
    ):
        b = bounds(name)
        assert b[0] <= 0.00025 and b[-2] >= 10.0 and b[-1] == float("inf"), name
    watch = bounds("watchtime_predicted_watch_time_seconds")
    assert watch[0] <= 1 and 3 in watch and watch[-2] >= 600
    prob = bounds("watchtime_predicted_quick_skip_prob")
    assert prob[0] <= 0.05 and 0.5 in prob and prob[-2] == 1.0


def test_a_prediction_moves_every_series_it_should(client: AppClient) -> None:
    n = 13
    features, _ = request_rows(n, 400)
    before = scrape(client)
    r = client.post(PREDICT, content=orjson.dumps({"features": features}))
    after = scrape(client)
    assert r.status_code == 200
    doc = r.json()

    def d(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    assert d("watchtime_requests_total", model=MODEL, endpoint="predict", status="200") == 1
    assert d("watchtime_request_duration_seconds_count", model=MODEL, endpoint="predict") == 1
    assert d("watchtime_request_duration_seconds_sum", model=MODEL, endpoint="predict") > 0
    for name in ("queue", "inference", "postprocess"):
        assert d(f"watchtime_{name}_duration_seconds_count", model=MODEL) == 1, name
    assert d("watchtime_request_rows_count", model=MODEL) == 1
    assert d("watchtime_request_rows_sum", model=MODEL) == n
    assert d("watchtime_batch_rows_sum", model=MODEL) == n
    assert d("watchtime_rows_total", model=MODEL) == n
    assert d("watchtime_batches_total", model=MODEL) == 1
    assert value(after, "watchtime_queue_rows", model=MODEL) == 0
    assert value(after, "watchtime_inflight_requests") == 0
    # The drift histograms hold exactly the served numbers (cumulative bucket counts).
    for name, served in (
        ("watchtime_predicted_watch_time_seconds", doc["expected_watch_time_s"]),
        ("watchtime_predicted_quick_skip_prob", doc["quick_skip_prob"]),
    ):
        x = np.asarray(served)
        assert d(f"{name}_count", model=MODEL) == n
        assert d(f"{name}_sum", model=MODEL) == pytest.approx(x.sum(), rel=1e-9)
        for sample, lab in after:
            labels = dict(lab)
            if sample == f"{name}_bucket" and labels["model"] == MODEL:
                le = float(labels["le"])
                got = d(f"{name}_bucket", **labels)
                assert got == np.count_nonzero(x <= le), (name, le)


def test_refusals_count_by_status_and_reason(client: AppClient) -> None:
    too_many, _ = request_rows(60)
    before = scrape(client)
    assert client.post(PREDICT, content=b"{").status_code == 422
    assert client.post(PREDICT, content=orjson.dumps({"features": too_many})).status_code == 413
    assert client.post("/v1/models/nope/predict", content=b"{}").status_code == 404
    assert client.post(f"/v2/models/{MODEL}/infer", content=b"[]").status_code == 400
    after = scrape(client)

    def d(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    assert d("watchtime_requests_total", model=MODEL, endpoint="predict", status="422") == 1
    assert d("watchtime_requests_total", model=MODEL, endpoint="predict", status="413") == 1
    assert d("watchtime_requests_total", model="unknown", endpoint="predict", status="404") == 1
    assert d("watchtime_requests_total", model=MODEL, endpoint="infer", status="400") == 1
    assert d("watchtime_rejected_total", model=MODEL, reason="invalid") == 2
    assert d("watchtime_rejected_total", model=MODEL, reason="too_large") == 1
    assert d("watchtime_rows_total", model=MODEL) == 0
    assert value(after, "watchtime_inflight_requests") == 0


def test_promtool_accepts_the_exposition(client: AppClient) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is missing (Debian package prometheus; make system-deps)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    client.post(PREDICT, content=orjson.dumps({"features": request_rows(3)[0]}))
    text = client.get("/metrics").content
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
