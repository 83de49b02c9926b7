"""An unlucky operator: a corrupt model file, a worker killed with SIGKILL.

A broken model version must stop start-up (exit status non-zero, with one worker or two)
unless ``WATCHTIME_STRICT_MODELS=false``, in which case readiness and a metric say what
failed. A worker killed by ``kill -9`` must not leave its live gauges in ``/metrics``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.support import MODELS
from tests.support.hostile import ServiceProcess, get


def _repository(tmp_path: Path, broken: list[str]) -> Path:
    """A copy of egmn/1, egmn/2 and vr/1, with each ``name/version`` in ``broken`` holding a
    truncated ``model.onnx`` (its sha256 no longer matches the manifest)."""
    root = tmp_path / "models"
    for label in ("egmn/1", "egmn/2", "vr/1"):
        shutil.copytree(MODELS / label, root / label)
    for label in broken:
        onnx = root / label / "model.onnx"
        onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    return root


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_a_corrupt_model_stops_start_up(tmp_path: Path, workers: int) -> None:
    svc = ServiceProcess(models=_repository(tmp_path, ["egmn/2"]), workers=workers)
    try:
        status = svc.wait_exit(timeout=90)
    finally:
        svc.stop()
    log = svc.output()
    assert status == 3, log
    assert "refusing model egmn/2" in log and "strict start-up" in log, log
    assert "start-up failed (exit status 3)" in log, log


@pytest.mark.parametrize("workers", [1, 2])
def test_no_servable_model_exits_non_zero(tmp_path: Path, workers: int) -> None:
    root = _repository(tmp_path, ["egmn/1", "egmn/2", "vr/1"])
    env = {"WATCHTIME_STRICT_MODELS": "false"}
    svc = ServiceProcess(models=root, workers=workers, env=env)
    try:
        status = svc.wait_exit(timeout=90)
    finally:
        svc.stop()
    assert status == 3, svc.output()
    assert "no servable model" in svc.output()


def test_lenient_start_up_reports_what_failed(tmp_path: Path) -> None:
    root = _repository(tmp_path, ["egmn/2"])
    svc = ServiceProcess(models=root, env={"WATCHTIME_STRICT_MODELS": "false"})
    try:
        svc.wait_ready()
        status, body = get(svc.port, "/readyz")
        assert status == 200
        assert orjson.loads(body) == {
            "ready": True,
            "failed_models": [{"model": "egmn", "version": "2"}],
        }
        status, text = get(svc.port, "/metrics")
        expected = {
            (("model", "egmn"), ("version", "1")): 0.0,
            (("model", "egmn"), ("version", "2")): 1.0,
            (("model", "vr"), ("version", "1")): 0.0,
        }
        assert _samples(text.decode(), "watchtime_model_refused") == expected
        assert _samples(text.decode(), "watchtime_model_load_failures_total") == expected
        status, body = get(svc.port, "/v1/models/egmn")
        assert status == 200 and orjson.loads(body)["versions"] == ["1"]
    finally:
        svc.stop()


def test_healthy_start_up_reports_no_failure() -> None:
    svc = ServiceProcess()
    try:
        svc.wait_ready()
        assert orjson.loads(get(svc.port, "/readyz")[1]) == {"ready": True}
        text = get(svc.port, "/metrics")[1].decode()
        for name in ("watchtime_model_refused", "watchtime_model_load_failures_total"):
            failures = _samples(text, name)
            assert failures and set(failures.values()) == {0.0}, (name, failures)
    finally:
        svc.stop()


def _inflight_of(metrics_dir: Path, pid: int) -> float:
    """The in-flight gauge as one worker's own file holds it."""
    file = metrics_dir / f"gauge_livesum_{pid}.db"
    if not file.exists():
        return 0.0
    alone = Path(tempfile.mkdtemp())
    try:
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        samples = _samples(generate_latest(registry).decode(), "watchtime_inflight_requests")
        return sum(samples.values())
    finally:
        shutil.rmtree(alone)


def _open_uploads(port: int, count: int) -> list[socket.socket]:
    """Requests whose headers and first body bytes are in, the rest never sent: each holds
    one request in flight until its connection closes."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"features": {'
        )
        held.append(sock)
    return held


def test_a_killed_worker_leaves_no_gauges_behind() -> None:
    svc = ServiceProcess(
        workers=2,
        env={"WATCHTIME_TIMEOUT_REQUEST_BODY_S": "120"},  # the uploads are held on purpose
    )
    held: list[socket.socket] = []
    try:
        svc.wait_ready()
        workers = svc.workers()
        assert len(workers) == 2, workers
        victim = None
        for _ in range(10):  # bounded: up to 10 rounds of 4 held uploads
            held += _open_uploads(svc.port, 4)
            time.sleep(0.3)
            busy = [pid for pid in workers if _inflight_of(svc.metrics_dir, pid) > 0]
            if busy:
                victim = busy[0]
                break
        assert victim is not None, svc.output()
        held_by_victim = _inflight_of(svc.metrics_dir, victim)
        assert held_by_victim >= 1

        os.kill(victim, signal.SIGKILL)
        for sock in held:  # the survivor's requests end with their connections
            sock.close()
        held = []

        deadline = time.monotonic() + 30
        inflight = None
        while time.monotonic() < deadline:
            status, text = get(svc.port, "/metrics", timeout=5)
            assert status == 200
            inflight = _samples(text.decode(), "watchtime_inflight_requests")
            queued = _samples(text.decode(), "watchtime_queue_rows")
            gone = not (svc.metrics_dir / f"gauge_livesum_{victim}.db").exists()
            if gone and set(inflight.values()) == {0.0} and set(queued.values()) == {0.0}:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"gauges stayed: inflight {inflight}\n{svc.output()}")

        # The supervisor started a replacement, which serves.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(svc.workers()) < 2:
            time.sleep(0.2)
        assert len(svc.workers()) == 2 and victim not in svc.workers()
        svc.wait_ready()
        assert f"worker {victim} ended" in svc.output()
    finally:
        for sock in held:
            sock.close()
        svc.stop()
