"""Overload refused fast and visibly: a bounded queue (429 + Retry-After) and deadlines (504).

Real requests through the real app: the queue is made tiny and the batch delay long, so a
first request's rows sit in the queue while the next ones arrive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from service.config import load_settings
from service.errors import ConfigError
from service.runtime.repository import ModelRepository
from tests.support import MODELS
from tests.support.api import AppClient, app_client, request_rows
from tests.support.metrics import delta, scrape
from tests.support.v2 import v2_body

MODEL = "egmn"
PREDICT = f"/v1/models/{MODEL}/predict"
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def tiny_queue(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository, max_queue_rows=10, max_batch_rows=64, max_queue_delay_ms=1500)


@pytest.fixture(scope="module")
def slow_batches(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository, max_batch_rows=64, max_queue_delay_ms=1000)


@pytest.fixture(scope="module")
def default_deadline(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository, max_queue_delay_ms=1000, default_timeout_ms=30)


def _body(n: int, start: int = 0) -> bytes:
    return orjson.dumps({"features": request_rows(n, start)[0]})


def test_full_queue_is_429_with_retry_after_and_the_rows_are_not_run(
    tiny_queue: AppClient,
) -> None:
    before = scrape(tiny_queue)
    calls = [("POST", PREDICT, {"content": _body(8, 10 * i)}) for i in range(3)]
    answers = tiny_queue.gather(calls)
    after = scrape(tiny_queue)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 429, 429]
    for r in answers:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            doc = r.json()
            assert doc["code"] == "queue_full" and "queue" in doc["error"]
            assert set(doc) == {"error", "code", "field", "row"}
    assert delta(before, after, "watchtime_rows_total", model=MODEL) == 8
    assert delta(before, after, "watchtime_rejected_total", model=MODEL, reason="queue_full") == 2
    assert (
        delta(
            before, after, "watchtime_requests_total", model=MODEL, endpoint="predict", status="429"
        )
        == 2
    )


def test_full_queue_on_v2_is_429_with_the_v2_body(tiny_queue: AppClient) -> None:
    calls = [("POST", INFER, {"content": v2_body(8, 10 * i)}) for i in range(2)]
    answers = tiny_queue.gather(calls)
    assert sorted(r.status_code for r in answers) == [200, 429]
    refused = next(r for r in answers if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert set(refused.json()) == {"error"}


def test_a_request_larger_than_the_queue_bound_is_served_when_the_queue_is_empty(
    tiny_queue: AppClient,
) -> None:
    r = tiny_queue.post(PREDICT, content=_body(40))
    assert r.status_code == 200 and r.json()["n"] == 40


def test_expired_deadline_is_504_and_its_rows_never_run(slow_batches: AppClient) -> None:
    before = scrape(slow_batches)
    calls = [
        ("POST", PREDICT, {"content": _body(4), "headers": {"X-Request-Timeout-Ms": "50"}}),
        ("POST", PREDICT, {"content": _body(3, 50)}),
    ]
    late, on_time = slow_batches.gather(calls)
    after = scrape(slow_batches)
    assert late.status_code == 504, late.text
    assert late.json()["code"] == "deadline_exceeded"
    assert on_time.status_code == 200 and on_time.json()["n"] == 3
    assert delta(before, after, "watchtime_rows_total", model=MODEL) == 3
    assert delta(before, after, "watchtime_rejected_total", model=MODEL, reason="deadline") == 1
    assert delta(before, after, "watchtime_queue_rows", model=MODEL) == 0


def test_v2_timeout_parameter_is_a_deadline_in_microseconds(slow_batches: AppClient) -> None:
    before = scrape(slow_batches)
    late = slow_batches.post(INFER, content=v2_body(2, 0, timeout=50_000))
    assert late.status_code == 504 and set(late.json()) == {"error"}
    ok = slow_batches.post(INFER, content=v2_body(2, 0, timeout=30_000_000))
    assert ok.status_code == 200
    after = scrape(slow_batches)
    assert delta(before, after, "watchtime_rows_total", model=MODEL) == 2


def test_a_generous_deadline_is_met(slow_batches: AppClient) -> None:
    r = slow_batches.post(PREDICT, content=_body(2), headers={"X-Request-Timeout-Ms": "60000"})
    assert r.status_code == 200


def test_the_configured_default_deadline_applies(default_deadline: AppClient) -> None:
    assert default_deadline.post(PREDICT, content=_body(2)).status_code == 504
    longer = {"X-Request-Timeout-Ms": "60000"}
    # The default is for requests that state none: a request's own deadline replaces it.
    assert default_deadline.post(PREDICT, content=_body(2), headers=longer).status_code == 200


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", "", "1e400"])
def test_bad_timeout_header_is_a_clear_4xx(slow_batches: AppClient, value: str) -> None:
    headers = {"X-Request-Timeout-Ms": value}
    r = slow_batches.post(PREDICT, content=_body(1), headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "X-Request-Timeout-Ms"
    r = slow_batches.post(INFER, content=v2_body(1, 0), headers=headers)
    assert r.status_code == 400 and "X-Request-Timeout-Ms" in r.json()["error"]


@pytest.mark.parametrize("value", ["soon", -1, True, [1], {"a": 1}])
def test_bad_v2_timeout_parameter_is_400(slow_batches: AppClient, value: Any) -> None:
    r = slow_batches.post(INFER, content=v2_body(1, 0, timeout=value))
    assert r.status_code == 400 and "timeout" in r.json()["error"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_BATCH_ROWS", "0"),
        ("MAX_BATCH_ROWS", "many"),
        ("MAX_QUEUE_DELAY_MS", "-1"),
        ("MAX_QUEUE_DELAY_MS", "nan"),
        ("MAX_QUEUE_ROWS", "0"),
        ("DEFAULT_TIMEOUT_MS", "-3"),
        ("BATCHING", "maybe"),
    ],
)
def test_bad_batching_settings_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(f"WATCHTIME_{variable}", value)
    with pytest.raises(ConfigError, match=f"WATCHTIME_{variable}"):
        load_settings(model_repository=MODELS)
