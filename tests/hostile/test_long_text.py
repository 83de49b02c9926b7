"""One long text value in a large request: refused by name, at the cost of its body only.

A 2.5 MB body of 10,000 rows with one 60,000-character ``tag`` once added 4.6 GB to the
worker (a fixed-width text array sizes every row by the longest value), 2.3 GB over v2
``BYTES``, and a 29M-character value asked for 1 TiB and got a 500. Text values are now
held to 256 characters and kept as references: each form of the request is refused with
the field and the row, at once, and the worker's memory grows by about the body.
``HOSTILE_SCALE=full`` sends the issue's 29M-character value as well.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from service.protocol.errors import NATIVE, V2, as_service_error
from tests.support.hostile import (
    ServiceProcess,
    example_columns,
    peak_rss_bytes,
    request,
    reset_peak_rss,
    rss_bytes,
    scaled,
    timed_get,
    v2_binary_body,
    v2_inputs,
)

ROWS = 10_000
ROW = 7_777
LENGTHS = [60_000, *scaled([], [29_000_000])]
BODY_LIMIT = 32 << 20
"""The shared server's ``WATCHTIME_MAX_BODY_BYTES`` (the default): a larger body is 413."""


def growth_limit(body: bytes) -> int:
    """Peak growth allowed for a request: in proportion to its body (held, joined, parsed: the
    row form's 10,000 dicts take four times their JSON) plus slack for the allocator; the old
    fixed-width arrays took GBs."""
    return 5 * len(body) + (32 << 20)


def _columns(length: int) -> dict[str, list[Any]]:
    columns = example_columns(ROWS)
    columns["tag"] = list(columns["tag"])
    columns["tag"][ROW] = "x" * length
    return columns


def _native(length: int) -> bytes:
    return orjson.dumps({"features": _columns(length)})


def _rows(length: int) -> bytes:
    columns = _columns(length)
    rows = zip(*columns.values(), strict=True)
    return orjson.dumps({"instances": [dict(zip(columns, row, strict=True)) for row in rows]})


def _v2_tensors(length: int) -> list[dict[str, Any]]:
    tensors = v2_inputs(ROWS)
    for tensor in tensors:
        if tensor["name"] == "tag":
            tensor["data"] = _columns(length)["tag"]
    return tensors


def _v2_json(length: int) -> bytes:
    return orjson.dumps({"inputs": _v2_tensors(length)})


def _v2_binary(length: int) -> tuple[bytes, int]:
    return v2_binary_body(_v2_tensors(length))


FORMS = ["native columns", "native rows", "v2 JSON", "v2 binary"]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("form", FORMS)
def test_one_long_text_value_is_refused_by_name_with_little_memory(
    service: ServiceProcess, form: str, length: int
) -> None:
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if form == "native columns":
        path, body, status_wanted, field = "/v1/predict", _native(length), 422, "features.tag"
    elif form == "native rows":
        path, body, status_wanted, field = "/v1/predict", _rows(length), 422, "instances.tag"
    elif form == "v2 JSON":
        path, body, status_wanted, field = "/v2/models/egmn/infer", _v2_json(length), 400, "'tag'"
    else:
        path, status_wanted, field = "/v2/models/egmn/infer", 400, "'tag'"
        body, header_length = _v2_binary(length)
        headers["Inference-Header-Content-Length"] = str(header_length)
    (worker,) = service.workers()
    base = rss_bytes(worker)
    reset_peak_rss(worker)
    started = time.monotonic()
    status, _, answer = request(service.port, "POST", path, body, headers, timeout=60)
    elapsed = time.monotonic() - started
    growth = peak_rss_bytes(worker) - base
    if len(body) > BODY_LIMIT:  # the row form of the 29M-character value: over the limit
        assert status == 413, answer[:300]
    else:
        assert status == status_wanted, answer[:300]
        message = orjson.loads(answer)["error"]
        assert field in message and str(ROW) in message and str(length) in message, message
        if path == "/v1/predict":
            assert orjson.loads(answer)["row"] == ROW
    assert elapsed < 2.0, elapsed
    assert growth < growth_limit(body), f"peak growth {growth >> 20} MiB"
    assert timed_get(service.port, "/healthz")[0] == 200
    print(
        f"\n{form}, {len(body) / 1e6:.1f} MB body, one {length}-character value: {status} "
        f"in {elapsed * 1000:.0f} ms, worker peak +{growth / 2**20:.0f} MiB"
    )


def test_memory_error_is_413() -> None:
    """A request that needs more memory than there is: 413 (too large), never a 500."""
    for style in (NATIVE, V2):
        err = as_service_error(MemoryError(), "features")
        assert (style.status(err), err.code) == (413, "too_large")
