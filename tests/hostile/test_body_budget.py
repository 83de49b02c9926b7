"""Held uploads against the worker's budget of buffered body bytes.

80 uploads of 31 MiB, each stopped before its last byte, once added 2.4 GiB to a worker and
left 1.46 GiB behind after they closed. Now a worker holds at most
``WATCHTIME_MAX_BUFFERED_BODY_BYTES`` of request bodies at once: an upload that does not
fit is answered 503 (``body_budget_full``, ``Retry-After``) before its body when its
``Content-Length`` says so, or as soon as its bytes pass the budget; the bytes are given
back when each request ends, disconnects included. The default scale runs the attack with
small limits (3 MiB uploads against a 32 MiB budget); ``HOSTILE_SCALE=full`` runs the
issue's (31 MiB uploads against the default 256 MiB budget).
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.hostile import (
    ServiceProcess,
    metric_value,
    peak_rss_bytes,
    predict_body,
    request,
    reset_peak_rss,
    rss_bytes,
    scaled,
    status_of,
    timed_get,
)

BODY_LIMIT = scaled(4, 32) << 20
"""``WATCHTIME_MAX_BODY_BYTES`` of the server under attack (full scale: the default)."""
BUDGET = scaled(32, 256) << 20
"""``WATCHTIME_MAX_BUFFERED_BODY_BYTES`` (full scale: the default)."""
DECLARED = BODY_LIMIT - (1 << 20)
"""The ``Content-Length`` of every held upload (full scale: the issue's 31 MiB)."""
UPLOADS = scaled(32, 80)
FITS = BUDGET // DECLARED
"""Held uploads the budget takes: 10 (full scale: 8)."""
SLACK = 16 << 20
"""Memory a worker may add beyond the budget: uvicorn's buffers, the refused uploads'
last chunks, the allocator."""


@pytest.fixture(scope="module")
def budget_service() -> Iterator[ServiceProcess]:
    svc = ServiceProcess(
        env={
            "WATCHTIME_MAX_BODY_BYTES": str(BODY_LIMIT),
            "WATCHTIME_MAX_BUFFERED_BODY_BYTES": str(BUDGET),
        }
    )
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()


def _head(path: str, declared: int | None) -> bytes:
    length = "Transfer-Encoding: chunked" if declared is None else f"Content-Length: {declared}"
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
    ).encode()


def _upload(port: int, declared: int, sent: int, path: str = "/v1/predict") -> socket.socket:
    """A connection that sent ``sent`` bytes of a ``declared``-byte body and holds."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(_head(path, declared))
    block = b" " * (1 << 20)
    left = sent
    try:
        while left:
            left -= sock.send(block[: min(left, len(block))])
    except OSError:  # the server answered and closed: its answer is read later
        pass
    return sock


def _answer(sock: socket.socket, wait: float) -> bytes:
    """What the server wrote on ``sock`` within ``wait`` seconds (b"" for nothing)."""
    sock.settimeout(wait)
    try:
        return sock.recv(65536)
    except (TimeoutError, BlockingIOError):
        return b""
    except ConnectionResetError:
        return b"reset"


def _hold_until_full(port: int, held: list[socket.socket], refused: list[bytes]) -> None:
    """Add held uploads one at a time until the budget takes no more (bounded: ``UPLOADS``)."""
    for _ in range(UPLOADS):
        if len(held) >= FITS:
            return
        sock = _upload(port, DECLARED, DECLARED - 1)
        answer = _answer(sock, 0.3)
        if answer:
            refused.append(answer)
            sock.close()
            return
        held.append(sock)


def test_held_uploads_stay_within_the_budget(budget_service: ServiceProcess) -> None:
    port = budget_service.port
    (worker,) = budget_service.workers()
    refused_before = metric_value(port, "watchtime_requests_total", status="503")
    gone_before = metric_value(port, "watchtime_requests_total", status="499")
    base = rss_bytes(worker)
    reset_peak_rss(worker)
    socks: list[socket.socket] = []
    held: list[socket.socket] = []
    try:
        # The attack: every upload sends all but its last byte, then holds.
        started = time.monotonic()
        for _ in range(UPLOADS):
            socks.append(_upload(port, DECLARED, DECLARED - 1))
        attack_s = time.monotonic() - started
        answers = [_answer(sock, 0.5 if i == 0 else 0.05) for i, sock in enumerate(socks)]
        held = [sock for sock, answer in zip(socks, answers, strict=True) if not answer]
        refused = [answer for answer in answers if answer]
        assert FITS // 2 <= len(held) <= FITS, (len(held), FITS)
        assert len(refused) == UPLOADS - len(held)
        _hold_until_full(port, held, refused)
        assert len(held) == FITS
        for answer in refused:
            assert status_of(answer) == 503, answer[:200]
        assert b"retry-after: 1\r\n" in refused[0].lower()
        assert b'"code":"body_budget_full"' in refused[0]
        growth = peak_rss_bytes(worker) - base
        assert growth < BUDGET + SLACK, f"peak growth {growth >> 20} MiB"

        # Past the budget a new upload is refused before its body is sent (its length is
        # declared), or once its bytes pass the budget (chunked), on both protocols.
        for path in ("/v1/predict", "/v2/models/egmn/infer"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                started = time.monotonic()
                sock.sendall(_head(path, DECLARED))
                answer = _answer(sock, 2.0)
                refusal_s = time.monotonic() - started
            assert status_of(answer) == 503 and refusal_s < 0.5, (answer[:200], refusal_s)
            assert b"Retry-After" in answer or b"retry-after" in answer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(_head("/v1/predict", None))
            chunk = b" " * DECLARED  # more than the budget has left
            started = time.monotonic()
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            answer = _answer(sock, 2.0)
            assert status_of(answer) == 503, answer[:200]
            assert time.monotonic() - started < 0.5
        # What a compressed body decompresses to is held against the budget too.
        packed = gzip.compress(b" " * DECLARED)
        status, headers, body = request(
            port, "POST", "/v1/predict", packed, {"Content-Encoding": "gzip"}
        )
        assert status == 503 and headers.get("retry-after") == "1", body
        # Small requests still fit beside the held uploads; the probes stay fast.
        status, _, body = request(port, "POST", "/v1/predict", predict_body(2))
        assert status == 200, body
        status, elapsed = timed_get(port, "/healthz")
        assert status == 200 and elapsed < 0.5
    finally:
        for sock in socks + held:
            sock.close()

    # Every held request ends as a disconnect (499), and gives its bytes back.
    deadline = time.monotonic() + 10
    while metric_value(port, "watchtime_requests_total", status="499") - gone_before < FITS:
        assert time.monotonic() < deadline, "held uploads were not counted as gone"
        time.sleep(0.1)
    refused_count = metric_value(port, "watchtime_requests_total", status="503") - refused_before
    assert refused_count == len(refused) + 4  # the uploads refused above and the 4 probes
    time.sleep(0.3)
    after = rss_bytes(worker) - base
    assert after < SLACK, f"{after >> 20} MiB stay after the uploads closed"
    # The whole budget is free again: as many uploads as before are held, none refused.
    again = [_upload(port, DECLARED, DECLARED - 1) for _ in range(FITS)]
    try:
        assert [_answer(sock, 0.3) for sock in again] == [b""] * FITS
    finally:
        for sock in again:
            sock.close()
    assert "Traceback" not in budget_service.output()
    print(
        f"\n{UPLOADS} held uploads of {DECLARED >> 20} MiB sent in {attack_s:.2f} s: {FITS} "
        f"held, {UPLOADS - FITS} refused; worker peak +{growth / 2**20:.0f} MiB "
        f"(budget {BUDGET >> 20} MiB), {after / 2**20:+.0f} MiB after they closed"
    )


def test_a_budget_smaller_than_one_body_stops_start_up() -> None:
    svc = ServiceProcess(
        env={"WATCHTIME_MAX_BODY_BYTES": "4194304", "WATCHTIME_MAX_BUFFERED_BODY_BYTES": "1048576"}
    )
    try:
        assert svc.wait_exit(timeout=60) == 2
    finally:
        svc.stop()
    assert "WATCHTIME_MAX_BUFFERED_BODY_BYTES (1048576) must be at least" in svc.output()
