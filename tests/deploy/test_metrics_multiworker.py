"""Metrics of a real ``python -m service --workers 2``: both workers' counts add up in one
``/metrics`` (prometheus-client multiprocess mode), and promtool accepts the merged text."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.api import request_rows
from tests.support.deploy import Service, get
from tests.support.metrics import parse, value

pytestmark = pytest.mark.slow

MODEL = "egmn"


def _post(port: int, body: bytes) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:  # a new connection each time, so the kernel hands them to either worker
        conn.request("POST", "/v1/predict", body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _per_worker_requests(directory: Path) -> dict[str, float]:
    """Each worker's own count of answered predictions, read from its own counter file."""
    counts: dict[str, float] = {}
    for file in directory.glob("counter_*.db"):
        pid = file.stem.split("_", 1)[1]
        alone = Path(tempfile.mkdtemp())
        try:
            shutil.copy(file, alone / file.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(alone))
            samples, _ = parse(generate_latest(registry).decode())
            counts[pid] = value(
                samples, "watchtime_requests_total", model=MODEL, endpoint="predict", status="200"
            )
        finally:
            shutil.rmtree(alone)
    return counts


def _wait_for_workers(directory: Path, workers: int, timeout: float) -> None:
    """Until each worker has written its series: ``/readyz`` answers once one worker is
    ready, and another may still be loading its models (each one's series at zero)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if len(_per_worker_requests(directory)) == workers:
                return
        except AssertionError:  # a worker's file without the series yet
            pass
        assert time.monotonic() < deadline, f"{workers} workers not ready in {timeout} s"
        time.sleep(0.2)


def test_two_workers_add_up(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"stale")  # must be wiped at start
    service = Service("--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    try:
        service.wait_ready(timeout=120)
        _wait_for_workers(directory, 2, timeout=120)
        n = 4
        body = orjson.dumps({"features": request_rows(n)[0]})
        sent = 0
        per_worker: dict[str, float] = {}
        with ThreadPoolExecutor(4) as pool:
            while sent < 400:
                statuses = list(pool.map(lambda _: _post(service.port, body), range(20)))
                assert statuses == [200] * 20
                sent += 20
                per_worker = _per_worker_requests(directory)
                if len([c for c in per_worker.values() if c > 0]) >= 2:
                    break
        assert len(per_worker) == 2, per_worker
        assert all(c > 0 for c in per_worker.values()), f"one worker served all: {per_worker}"
        assert sum(per_worker.values()) == sent

        status, text = get(service.port, "/metrics")
        assert status == 200
        samples, _ = parse(text.decode())
        total = value(
            samples, "watchtime_requests_total", model=MODEL, endpoint="predict", status="200"
        )
        assert total == sent
        assert value(samples, "watchtime_rows_total", model=MODEL) >= sent * n
        assert value(samples, "watchtime_request_rows_sum", model=MODEL) == sent * n
        assert value(samples, "watchtime_predicted_watch_time_seconds_count", model=MODEL) == (
            sent * n
        )
        # A gauge of 1 per worker stays 1 (max), live gauges sum over live workers.
        assert value(samples, "watchtime_model_info", model=MODEL, version="1", family="egm") == 1
        assert value(samples, "watchtime_inflight_requests") == 0
        assert value(samples, "watchtime_queue_rows", model=MODEL) == 0
        for reason in ("queue_full", "deadline", "invalid", "too_large"):
            assert value(samples, "watchtime_rejected_total", model=MODEL, reason=reason) == 0

        promtool = shutil.which("promtool")
        if promtool is None:
            if os.environ.get("CI") == "true":
                pytest.fail("promtool is missing (Debian package prometheus)")
        else:
            done = subprocess.run(
                [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60
            )
            assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    finally:
        output = service.finish()
    assert service.proc.returncode == 0, output
    assert not list(directory.glob("*_999999.db"))


def test_a_private_metrics_directory_is_made_and_removed() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    code = (
        "import os, service.__main__ as m; d, owned = m.metrics_directory(); "
        "print(d, owned, os.listdir(d))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    directory, owned, listing = done.stdout.split(" ", 2)
    assert owned == "True" and listing.strip() == "[]"
    shutil.rmtree(directory)
