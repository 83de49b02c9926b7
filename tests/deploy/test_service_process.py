"""``python -m service`` as a real process: start-up, readiness, prediction, and SIGTERM.

The graceful-shutdown promise is tested where it matters, on a real uvicorn with real
sockets: requests already sent when SIGTERM arrives must all be answered in full, readiness
must never be reported again once the signal is in, and the process must exit cleanly.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from service.runtime.repository import discover
from tests.support import MODELS, ROOT
from tests.support.api import request_rows
from tests.support.deploy import Service, get

pytestmark = pytest.mark.slow


@pytest.fixture
def service() -> Iterator[Service]:
    # One worker: the signal reaches the process that serves, so readiness drops at once
    # (with several, the supervisor relays it a moment later).
    svc = Service("--workers", "1")
    try:
        yield svc
    finally:
        if svc.proc.poll() is None:
            svc.proc.kill()
            svc.proc.wait()


def _send_predict(port: int, body: bytes) -> http.client.HTTPConnection:
    """Open a connection and send a whole predict request; the answer is read later."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/predict", body=body, headers={"content-type": "application/json"})
    return conn


ROWS = 5000


def test_start_predict_and_drain_on_sigterm(service: Service) -> None:
    service.wait_ready()
    assert get(service.port, "/healthz") == (200, b'{"live":true}')
    features, _ = request_rows(10_000)
    small = orjson.dumps({"features": {k: v[:64] for k, v in features.items()}})
    conn = _send_predict(service.port, small)
    first = conn.getresponse()
    assert first.status == 200
    expected_small = orjson.loads(first.read())["expected_watch_time_s"]
    conn.close()
    assert len(expected_small) == 64

    # Several large requests, each fully sent before the signal; none may be lost. Their
    # quantiles keep the server busy for well over a second on 2 cores, so the signal
    # lands after every connection was accepted and while answers are still being computed.
    bodies = [
        orjson.dumps(
            {
                "features": {k: v[i * 600 : i * 600 + ROWS] for k, v in features.items()},
                "quantiles": [0.1, 0.25, 0.5, 0.75, 0.9],
            }
        )
        for i in range(8)
    ]
    connections = [_send_predict(service.port, body) for body in bodies]
    time.sleep(0.5)
    service.proc.send_signal(signal.SIGTERM)

    # From the signal on, readiness is never reported again (503 or refused connection).
    readiness: list[Any] = []

    def probe() -> None:
        end = time.monotonic() + 1.0
        time.sleep(0.05)
        while time.monotonic() < end:
            try:
                readiness.append(get(service.port, "/readyz", timeout=2.0)[0])
            except OSError as exc:
                readiness.append(type(exc).__name__)
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    answers = []
    for conn in connections:
        response = conn.getresponse()
        answers.append((response.status, orjson.loads(response.read())))
        conn.close()
    prober.join()
    log = service.finish()
    # uvicorn re-raises the signal after its graceful shutdown, so the status is SIGTERM's
    assert service.proc.returncode in (0, -signal.SIGTERM), log
    assert "Waiting for connections to close" in log, log  # the requests were in flight
    assert [status for status, _ in answers] == [200] * len(bodies), log
    for i, (_, doc) in enumerate(answers):
        assert doc["n"] == ROWS
        if i == 0:  # the same rows answer the same, during shutdown as before it
            assert doc["expected_watch_time_s"][:64] == pytest.approx(expected_small, rel=1e-9)
    assert readiness and 200 not in readiness, readiness
    assert "Traceback" not in log and "Finished server process" in log, log


def test_configuration_errors_stop_start_up_with_one_line() -> None:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )

    for args, env, word in [
        (("--port", "70000"), None, "WATCHTIME_PORT"),
        ((), {"WATCHTIME_WORKERS": "zero"}, "WATCHTIME_WORKERS"),
        (("--model-repository", "/nonexistent"), None, "WATCHTIME_MODEL_REPOSITORY"),
        ((), {"WATCHTIME_MAX_REQUEST_ROWS": "-5"}, "WATCHTIME_MAX_REQUEST_ROWS"),
        ((), {"WATCHTIME_DEFAULT_MODEL": "nope"}, "WATCHTIME_DEFAULT_MODEL"),
        ((), {"WATCHTIME_LOG_LEVEL": "loud"}, "WATCHTIME_LOG_LEVEL"),
    ]:
        done = run(*args, env=env)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0] and "configuration error" in lines[0], lines


def test_environment_configures_and_cli_overrides() -> None:
    svc = Service(env={"WATCHTIME_PORT": "1", "WATCHTIME_MAX_REQUEST_ROWS": "3"})
    try:
        svc.wait_ready()  # --port given by Service wins over WATCHTIME_PORT=1
        features, _ = request_rows(4)
        conn = _send_predict(svc.port, orjson.dumps({"features": features}))
        response = conn.getresponse()
        assert response.status == 413  # WATCHTIME_MAX_REQUEST_ROWS from the environment
        conn.close()
    finally:
        svc.finish()


def test_several_workers_serve() -> None:
    svc = Service("--workers", "2")
    try:
        svc.wait_ready()
        features, _ = request_rows(8)
        for _ in range(4):
            conn = _send_predict(svc.port, orjson.dumps({"features": features}))
            response = conn.getresponse()
            assert response.status == 200 and orjson.loads(response.read())["n"] == 8
            conn.close()
    finally:
        log = svc.finish()
    served = len(discover(MODELS))
    assert served >= 1 and log.count(f"ready: {served} model(s)") == 2, log
