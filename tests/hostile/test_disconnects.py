"""Clients that leave: counted as 499 (not 500), logged without tracebacks, their rows dropped.

A disconnect during the upload was counted as a 500 with two tracebacks (500 disconnects
made 60,000 log lines) and tripped the 5xx alert; a 10,000-row request whose client left
0.3 s after sending still ran all its rows. Runs here are 256 rows, so such a request
spans 40 of them and its client leaves while they run.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator

import orjson
import pytest

from tests.support.hostile import (
    ServiceProcess,
    example_columns,
    metric_value,
    request,
    scaled,
    v2_inputs,
)

ROWS = 10_000
BATCH_ROWS = 256


@pytest.fixture(scope="module")
def batching_service() -> Iterator[ServiceProcess]:
    svc = ServiceProcess(env={"WATCHTIME_MAX_BATCH_ROWS": str(BATCH_ROWS)})
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()


def _count(port: int, status: str, endpoint: str | None = None) -> float:
    labels = {"status": status} | ({"endpoint": endpoint} if endpoint else {})
    return metric_value(port, "watchtime_requests_total", **labels)


def _wait_for(port: int, status: str, target: float, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while (value := _count(port, status)) < target and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def _head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_disconnect_during_upload_is_499_without_traceback(
    batching_service: ServiceProcess,
) -> None:
    port = batching_service.port
    per_route = scaled(20, 250)
    gone_before, failed_before = _count(port, "499"), _count(port, "500")
    lines_before = len(batching_service.output().splitlines())
    socks = []
    try:
        for path in ("/v1/predict", "/v2/models/egmn/infer"):
            for i in range(per_route):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(_head(path, 100_000) + b'{"features": {"user_id": [1, 2')
                if i % 2:  # half leave with a reset instead of a close
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                socks.append(sock)
        time.sleep(0.3)  # every upload has started
    finally:
        for sock in socks:
            sock.close()
    total = 2 * per_route
    assert _wait_for(port, "499", gone_before + total) - gone_before == total
    assert _count(port, "499", "predict") >= per_route
    assert _count(port, "500") == failed_before
    time.sleep(0.3)
    output = batching_service.output()
    assert "Traceback" not in output
    assert len(output.splitlines()) - lines_before < 5, output[-2000:]


def _native_body() -> bytes:
    return orjson.dumps({"features": example_columns(ROWS), "quantiles": [0.1, 0.5, 0.9]})


def _v2_body() -> bytes:
    return orjson.dumps({"inputs": v2_inputs(ROWS), "parameters": {"quantiles": [0.5]}})


@pytest.mark.parametrize(
    ("path", "make_body"),
    [("/v1/predict", _native_body), ("/v2/models/egmn/infer", _v2_body)],
    ids=["native", "v2"],
)
def test_rows_of_a_client_that_left_are_not_run(
    batching_service: ServiceProcess, path: str, make_body: Callable[[], bytes]
) -> None:
    port = batching_service.port
    body = make_body()
    # A whole request first: its rows all run, and how long that takes.
    rows_before = metric_value(port, "watchtime_rows_total", model="egmn")
    started = time.monotonic()
    status, _, answer = request(port, "POST", path, body, timeout=60)
    whole_s = time.monotonic() - started
    assert status == 200, answer[:200]
    assert metric_value(port, "watchtime_rows_total", model="egmn") - rows_before == ROWS

    # The same request, its client gone a third of that time after sending.
    gone_before, failed_before = _count(port, "499"), _count(port, "500")
    rows_before = metric_value(port, "watchtime_rows_total", model="egmn")
    leave_after = whole_s / 3
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_head(path, len(body)) + body)
        time.sleep(leave_after)
    assert _wait_for(port, "499", gone_before + 1) == gone_before + 1
    time.sleep(whole_s)  # any run under way when the client left ends meanwhile
    ran = metric_value(port, "watchtime_rows_total", model="egmn") - rows_before
    assert ran < ROWS - 4 * BATCH_ROWS, f"{ran:.0f} of {ROWS} rows ran after the client left"
    assert _count(port, "500") == failed_before
    assert "Traceback" not in batching_service.output()
    print(
        f"\n{path}: a whole {ROWS}-row request took {whole_s:.2f} s; its client leaving "
        f"{leave_after:.2f} s after sending: {ran:.0f} rows ran, counted 499"
    )
