"""v2 request headers built to hurt: a shape bomb, a lone surrogate, a non-ASCII digit."""

from __future__ import annotations

import json
import threading
import time

import orjson

from tests.support.hostile import ServiceProcess, request, scaled, timed_get, v2_inputs

INFER = "/v2/models/egmn/infer"


def test_shape_bomb_is_refused_at_once_and_the_worker_keeps_serving(
    service: ServiceProcess,
) -> None:
    rank = scaled(100_000, 1_000_000)  # the bomb: [2**62] * 100000 spent 41 s
    body = orjson.dumps(
        {"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [2**62] * rank, "data": []}]}
    )
    probes: list[tuple[int, float]] = []
    done = threading.Event()

    def probe() -> None:
        for _ in range(200):  # bounded: at most 200 probes, stops when the bomb is answered
            if done.is_set():
                break
            probes.append(timed_get(service.port, "/healthz", timeout=5.0))
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.monotonic()
    try:
        status, _, answer = request(service.port, "POST", INFER, body, timeout=30.0)
    finally:
        done.set()
        prober.join(timeout=30)
    elapsed = time.monotonic() - started
    assert status == 400, answer
    assert b"dimensions" in answer
    assert elapsed < 2.0, elapsed
    assert probes and all(s == 200 and t < 1.0 for s, t in probes), probes


def test_dimensions_beyond_int64_are_refused(service: ServiceProcess) -> None:
    body = json.dumps(
        {"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [2**64, 1], "data": []}]}
    )
    status, _, answer = request(service.port, "POST", INFER, body.encode())
    assert status == 400, answer


def test_lone_surrogate_in_the_id_is_400(service: ServiceProcess) -> None:
    good = orjson.dumps({"id": "ok-1", "inputs": v2_inputs(2)})
    status, _, answer = request(service.port, "POST", INFER, good)
    assert status == 200 and orjson.loads(answer)["id"] == "ok-1", answer
    # orjson refuses the escape, the stdlib parser (kept for Triton's NaN tokens) accepts it
    bad = good.replace(b'"ok-1"', b'"\\ud800x"')
    assert bad != good
    status, _, answer = request(service.port, "POST", INFER, bad)
    assert status == 400, answer
    assert b"id" in answer and b"Traceback" not in answer


def test_non_ascii_digit_in_the_header_length_is_400(service: ServiceProcess) -> None:
    header = orjson.dumps({"inputs": v2_inputs(2)})
    for value in ("\u00b2", "\u00b9", " 12\u00b3"):  # superscripts: isdigit() but not int()
        status, _, answer = request(
            service.port,
            "POST",
            INFER,
            header,
            headers={"Inference-Header-Content-Length": value},
        )
        assert status == 400, (value, answer)
        assert b"Inference-Header-Content-Length" in answer
    status, _, answer = request(
        service.port,
        "POST",
        INFER,
        header,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200, answer
