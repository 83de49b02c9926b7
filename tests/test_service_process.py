"""``python -m service`` as a real process: start-up, readiness, prediction, and SIGTERM.

The graceful-shutdown promise is tested where it matters, on a real uvicorn with real
sockets: requests already sent when SIGTERM arrives must all be answered in full, readiness
must never be reported again once the signal is in, and the process must exit cleanly.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from api_support import MODELS, ROOT, request_rows

from service.runtime.repository import discover

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Service:
    """A ``python -m service`` child process with its output captured for diagnosis."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--model-repository", str(MODELS), *args]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "WATCHTIME_INTRA_OP_THREADS": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = b""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited early:\n{self.finish()}")
            try:
                if _get(self.port, "/readyz", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"service not ready after {timeout} s:\n{self.finish()}")

    def finish(self, timeout: float = 60.0) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        self.output += out
        return self.output.decode(errors="replace")


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
    assert _get(service.port, "/healthz") == (200, b'{"live":true}')
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
                readiness.append(_get(service.port, "/readyz", timeout=2.0)[0])
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
