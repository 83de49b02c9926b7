"""Compressed request bodies: ``Content-Encoding: gzip`` (and ``deflate``) within the limits.

A gzip body was once ignored and answered "malformed JSON". Now it is decompressed as it
arrives, a block at a time, and what it decompresses to counts against
``WATCHTIME_MAX_BODY_BYTES``: a decompression bomb gets 413 once that much came out, not
after it filled the memory. Other content codings get 415 with ``Accept-Encoding``.
"""

from __future__ import annotations

import gzip
import struct
import time
import zlib

import numpy as np
import orjson
import pytest

from tests.support.hostile import (
    ServiceProcess,
    example_columns,
    metric_value,
    peak_rss_bytes,
    predict_body,
    request,
    reset_peak_rss,
    rss_bytes,
    scaled,
    timed_get,
    v2_binary_body,
    v2_inputs,
)

PREDICT = "/v1/predict"
INFER = "/v2/models/egmn/infer"
JSON = {"Content-Type": "application/json"}
BODY_LIMIT = 32 << 20
"""The shared server's ``WATCHTIME_MAX_BODY_BYTES`` (the default)."""


def gzip_bomb(total: int, block: int = 1 << 20) -> bytes:
    """A valid gzip stream of ``total`` zero bytes, about a thousandth of that, built without
    compressing all of it: one block of zeros compressed after a full flush codes the same
    way every time, so the stream repeats it (then an empty final block and the trailer)."""
    zeros = bytes(block)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    piece = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert piece == first  # the flush made the coding independent of what came before
    crc = 0
    for _ in range(total // block):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    final = b"\x03\x00"  # an empty final block (fixed Huffman codes: end of block only)
    return header + piece * (total // block) + final + struct.pack("<II", crc, total % 2**32)


def test_the_bomb_builder_makes_what_it_says() -> None:
    total = 8 << 20
    assert gzip.decompress(gzip_bomb(total)) == bytes(total)


def _binary_v2(n: int) -> tuple[bytes, int]:
    return v2_binary_body(v2_inputs(n), {"quantiles": [0.5]})


def test_gzip_and_deflate_bodies_answer_as_plain_ones(service: ServiceProcess) -> None:
    port = service.port
    native = orjson.dumps({"features": example_columns(50), "quantiles": [0.1, 0.9]})
    v2_json = orjson.dumps({"inputs": v2_inputs(50), "parameters": {"quantiles": [0.5]}})
    v2_binary, header_length = _binary_v2(50)
    binary_header = {"Inference-Header-Content-Length": str(header_length)}
    cases = [(PREDICT, native, JSON), (INFER, v2_json, JSON), (INFER, v2_binary, binary_header)]
    for path, body, headers in cases:
        status, _, plain = request(port, "POST", path, body, headers)
        assert status == 200, plain
        middle = len(body) // 2
        encoded = {
            "gzip": gzip.compress(body),
            "x-gzip": gzip.compress(body),
            "GZip": gzip.compress(body, compresslevel=1),
            "deflate": zlib.compress(body),  # HTTP's deflate: the zlib format
            "identity": body,
        }
        for coding, data in encoded.items():
            status, _, answer = request(
                port, "POST", path, data, {**headers, "Content-Encoding": coding}
            )
            assert (status, answer) == (200, plain), (path, coding, answer[:200])
        # two gzip members one after the other (RFC 1952), as `cat a.gz b.gz` makes
        members = gzip.compress(body[:middle]) + gzip.compress(body[middle:])
        status, _, answer = request(
            port, "POST", path, members, {**headers, "Content-Encoding": "gzip"}
        )
        assert (status, answer) == (200, plain), (path, answer[:200])


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_triton_client_compressed_requests(service: ServiceProcess, algorithm: str) -> None:
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(url=f"127.0.0.1:{service.port}")
    try:
        inputs = []
        for tensor in v2_inputs(20):
            kind, values = tensor["datatype"], tensor["data"]
            if kind == "BYTES":
                arr = np.asarray([v.encode() for v in values], dtype=np.object_)
            else:
                arr = np.asarray(values, np.int64 if kind == "INT64" else np.float64)
            infer_input = http.InferInput(tensor["name"], [20], kind)
            infer_input.set_data_from_numpy(arr, binary_data=True)
            inputs.append(infer_input)
        plain = client.infer("egmn", inputs).as_numpy("expected_watch_time_s")
        packed = client.infer("egmn", inputs, request_compression_algorithm=algorithm).as_numpy(
            "expected_watch_time_s"
        )
        assert plain.shape == (20,)
        np.testing.assert_array_equal(packed, plain)
    finally:
        client.close()


def test_gzip_bomb_is_413_at_the_body_limit_with_bounded_memory(service: ServiceProcess) -> None:
    """1 GiB of zeros in 1 MB of gzip (8 GiB at full scale): refused once 32 MiB came out."""
    total = scaled(1, 8) << 30
    bomb = gzip_bomb(total)
    port = service.port
    (worker,) = service.workers()
    too_large_before = metric_value(port, "watchtime_requests_total", status="413")
    base = rss_bytes(worker)
    reset_peak_rss(worker)
    times = []
    for path in (PREDICT, INFER):
        started = time.monotonic()
        status, _, answer = request(
            port, "POST", path, bomb, {**JSON, "Content-Encoding": "gzip"}, timeout=30
        )
        times.append(time.monotonic() - started)
        assert status == 413, answer[:200]
        assert f"decompresses to more than {BODY_LIMIT} bytes".encode() in answer
    growth = peak_rss_bytes(worker) - base
    assert max(times) < 2.0, times
    assert growth < BODY_LIMIT + (16 << 20), f"peak growth {growth >> 20} MiB"
    assert metric_value(port, "watchtime_requests_total", status="413") - too_large_before == 2
    # ...and none of it stays once refused (the refusal once kept the request's frames, with
    # the 32 MiB decompressed, alive in a reference cycle until the garbage collector ran)
    after = rss_bytes(worker) - base
    assert after < 16 << 20, f"{after >> 20} MiB stay after the refusals"
    status, elapsed = timed_get(port, "/healthz")
    assert status == 200 and elapsed < 0.5
    print(
        f"\ngzip bomb of {total >> 30} GiB in {len(bomb) / 1e6:.1f} MB: 413 in "
        f"{', '.join(f'{t * 1000:.0f} ms' for t in times)}, worker peak +{growth / 2**20:.0f} MiB, "
        f"{after / 2**20:+.0f} MiB after"
    )


def test_other_content_codings_are_415(service: ServiceProcess) -> None:
    body = predict_body(2)
    for path in (PREDICT, INFER):
        for coding in ("br", "zstd", "compress", "gzip, gzip", "gzip, br"):
            status, headers, answer = request(
                service.port, "POST", path, body, {**JSON, "Content-Encoding": coding}
            )
            assert status == 415, (path, coding, answer)
            assert headers.get("accept-encoding") == "gzip, deflate"
            assert b"Content-Encoding" in answer
            if path == PREDICT:
                assert orjson.loads(answer)["code"] == "unsupported_encoding"


def test_broken_compressed_bodies_are_invalid_input(service: ServiceProcess) -> None:
    body = predict_body(2)
    broken = {
        "truncated": gzip.compress(body)[:-12],
        "not gzip": body,
        "garbage after the member": gzip.compress(body) + b"trailing bytes",
    }
    for what, data in broken.items():
        for path, status_wanted in ((PREDICT, 422), (INFER, 400)):
            status, _, answer = request(
                service.port, "POST", path, data, {**JSON, "Content-Encoding": "gzip"}
            )
            assert status == status_wanted, (what, path, answer)
            assert b"not a valid compressed body" in answer, answer
    assert "Traceback" not in service.output()
