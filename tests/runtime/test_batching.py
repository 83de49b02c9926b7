"""Dynamic batching through the real app: concurrent requests merged, large ones split.

Each row's answer must be the same whichever rows shared its onnxruntime run, so batched
answers are compared for exact equality with an app that runs every request alone, and
with an independent onnxruntime session to a tolerance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from service.errors import FeatureError
from service.runtime.batcher import BatchConfig, Batcher
from service.runtime.features import encode_features
from service.runtime.model import ROW_BLOCK, pad_rows
from service.runtime.prediction import PredictOptions
from service.runtime.repository import ModelRepository
from tests.support import MODELS
from tests.support.api import (
    AppClient,
    Reference,
    app_client,
    client_for,
    request_rows,
)
from tests.support.metrics import delta, scrape
from tests.support.v2 import v2_body

MODEL = "egmn"


@pytest.fixture(scope="module")
def batched(repository: ModelRepository) -> Iterator[AppClient]:
    # A long delay: concurrent requests reliably meet in the queue.
    yield from app_client(repository, max_batch_rows=64, max_queue_delay_ms=400)


@pytest.fixture(scope="module")
def unbatched(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository, batching=False)


def _body(n: int, start: int, **options: Any) -> bytes:
    features, _ = request_rows(n, start)
    return orjson.dumps({"features": features, **options})


def _post(body: bytes) -> tuple[str, str, dict[str, Any]]:
    return ("POST", f"/v1/models/{MODEL}/predict", {"content": body})


FIELDS = ("expected_watch_time_s", "point_s", "std_s", "quick_skip_prob")


def test_concurrent_small_requests_share_runs_and_keep_their_answers(
    batched: AppClient, unbatched: AppClient
) -> None:
    sizes = [1, 3, 2, 5, 1, 4, 2, 7, 1, 3, 6, 2]
    bodies = [
        _body(
            n,
            start=37 * i,
            quantiles=[0.1 + 0.05 * i, 0.5],
            intervals=[[0, 1 + i], [1 + i, None]],
            quick_skip_threshold_s=1.0 + i,
        )
        for i, n in enumerate(sizes)
    ]
    before = scrape(batched)
    answers = batched.gather([_post(b) for b in bodies])
    after = scrape(batched)
    assert [r.status_code for r in answers] == [200] * len(sizes)
    runs = delta(before, after, "watchtime_batches_total", model=MODEL)
    assert 1 <= runs < len(sizes)
    assert delta(before, after, "watchtime_rows_total", model=MODEL) == sum(sizes)
    for body, got, n in zip(bodies, answers, sizes, strict=True):
        alone = unbatched.post(f"/v1/models/{MODEL}/predict", content=body)
        assert alone.status_code == 200
        doc, want = got.json(), alone.json()
        assert doc["n"] == n
        for key in (*FIELDS, "quantiles", "intervals", "quick_skip_threshold_s"):
            assert doc[key] == want[key], key  # bit-identical, in request order


def test_batched_rows_match_an_independent_session(batched: AppClient) -> None:
    reference = Reference()
    sizes = [5, 9, 2, 11]
    bodies = [_body(n, 300 + 50 * i) for i, n in enumerate(sizes)]
    answers = batched.gather([_post(b) for b in bodies])
    for i, (r, n) in enumerate(zip(answers, sizes, strict=True)):
        assert r.status_code == 200
        _, columns = request_rows(n, 300 + 50 * i)
        dist = reference.distribution(columns)
        np.testing.assert_allclose(r.json()["expected_watch_time_s"], dist.mean(), rtol=1e-6)
        # float32 GEMM rounding differs with the row block (see README): same rtol as the mean
        np.testing.assert_allclose(
            r.json()["quick_skip_prob"], dist.quick_skip_prob(3.0), rtol=1e-6
        )


def test_a_request_over_max_batch_rows_is_split_and_answered_whole(
    batched: AppClient, unbatched: AppClient
) -> None:
    n = 300  # max_batch_rows is 64: five runs
    body = _body(n, 1000, quantiles=[0.25, 0.75], return_params=True)
    before = scrape(batched)
    r = batched.post(f"/v1/models/{MODEL}/predict", content=body)
    after = scrape(batched)
    assert r.status_code == 200, r.text
    assert delta(before, after, "watchtime_batches_total", model=MODEL) == 5
    assert delta(before, after, "watchtime_rows_total", model=MODEL) == n
    assert delta(before, after, "watchtime_batch_rows_count", model=MODEL) == 5
    assert delta(before, after, "watchtime_batch_rows_sum", model=MODEL) == n
    alone = unbatched.post(f"/v1/models/{MODEL}/predict", content=body)
    assert r.json() == alone.json()
    _, columns = request_rows(n, 1000)
    want = Reference().distribution(columns).mean()
    np.testing.assert_allclose(r.json()["expected_watch_time_s"], want, rtol=1e-6)


def test_unbatched_app_runs_each_request_alone(unbatched: AppClient) -> None:
    sizes = [2, 3, 4]
    before = scrape(unbatched)
    answers = unbatched.gather([_post(_body(n, 10 * n)) for n in sizes])
    after = scrape(unbatched)
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert delta(before, after, "watchtime_batches_total", model=MODEL) == len(sizes)


def test_v2_requests_are_batched_too(batched: AppClient, unbatched: AppClient) -> None:
    bodies = [v2_body(3, 77 * i, quantiles=[0.5]) for i in range(4)]
    calls = [("POST", f"/v2/models/{MODEL}/infer", {"content": b}) for b in bodies]
    before = scrape(batched)
    answers = batched.gather(calls)
    after = scrape(batched)
    assert [r.status_code for r in answers] == [200] * 4, answers[0].text
    assert delta(before, after, "watchtime_batches_total", model=MODEL) < 4
    for body, r in zip(bodies, answers, strict=True):
        alone = unbatched.post(f"/v2/models/{MODEL}/infer", content=body).json()
        assert r.json()["outputs"] == alone["outputs"]


def test_padding_makes_rows_independent_of_their_batch(repository: ModelRepository) -> None:
    """Why runs are padded: onnxruntime's GEMM treats a ragged last block of rows apart.

    Unpadded, a row's float32 outputs may differ in the last bits with the batch size
    (measured here: up to a few 1e-6 absolute on the test day's rows); padded to the row
    block, every row is bit-identical to the same row in any other run.
    """
    model = repository.get(MODEL)
    _, columns = request_rows(300, 2000)
    tensors = encode_features(model.manifest, columns)
    names = model.output_names
    whole = model.session.run(names, pad_rows(tensors, 300))
    worst_unpadded = 0.0
    for lo, hi in [(0, 1), (5, 6), (17, 290), (3, 40), (100, 165), (7, 8)]:
        part = {k: v[lo:hi] for k, v in tensors.items()}
        raw = model.session.run(names, part)
        padded = model.session.run(names, pad_rows(part, hi - lo))
        for w, r, p in zip(whole, raw, padded, strict=True):
            assert p.shape[0] % ROW_BLOCK == 0
            np.testing.assert_array_equal(p[: hi - lo], w[lo:hi])
            worst_unpadded = max(worst_unpadded, float(np.abs(r - w[lo:hi]).max()))
    print(f"largest unpadded difference: {worst_unpadded:.3g}")
    assert worst_unpadded < 1e-4


def _alone(model: Any, columns: dict[str, np.ndarray], n: int, options: PredictOptions) -> Any:
    """A request's numbers computed by itself: its own encoding, run and post-processing."""
    return model.postprocess(model.run(model.encode(columns)), options)


def _submit(model: Any, requests: list[Any], **config: Any) -> list[Any]:
    async def go() -> list[Any]:
        batcher = Batcher(model, BatchConfig(**config))
        try:
            return await asyncio.gather(
                *(batcher.predict(c, n, o) for c, n, o in requests), return_exceptions=True
            )
        finally:
            await batcher.close()

    return asyncio.run(go())


KEYS = ("mean", "point", "std", "quick_skip_prob", "quantiles", "interval_mass")


def test_a_batch_of_mixed_options_gives_each_request_its_own_numbers_bit_for_bit(
    repository: ModelRepository,
) -> None:
    """One run encodes and post-processes every request's rows at once, whatever each asks.

    Each request's numbers must equal those of the request computed alone, bit for bit:
    other levels, intervals, thresholds and batch-mates must change nothing.
    """
    model = repository.get(MODEL)
    menu = [
        PredictOptions.create([0.05, 0.5, 0.95], [(0.0, 2.0), (2.0, None)], 2.5, True),
        PredictOptions.create([0.5]),
        PredictOptions.create(None, [(0.0, 3.0), (3.0, 10.0), (10.0, None)], 7.0),
        PredictOptions.create([0.1, 0.2, 0.3, 0.4, 0.6, 0.9]),
        PredictOptions.create(),
    ]
    rng = np.random.default_rng(7)
    sizes = [int(s) for s in rng.integers(1, 40, size=12)]
    requests = []
    for i, n in enumerate(sizes):
        _, columns = request_rows(n, 300 + 37 * i)
        requests.append((columns, n, menu[int(rng.integers(len(menu)))]))
    outcomes = _submit(model, requests, max_batch_rows=512, max_queue_delay_s=0.3)
    for (columns, n, options), got in zip(requests, outcomes, strict=True):
        assert got.n == n
        alone = _alone(model, columns, n, options)
        assert got.quick_skip_threshold_s == alone.quick_skip_threshold_s
        for key in KEYS:
            mine, want = getattr(got, key), getattr(alone, key)
            assert (mine is None) == (want is None), key
            if want is not None:
                np.testing.assert_array_equal(mine, want[:n], key)
        assert (got.params is None) == (alone.params is None)
        for name, value in (alone.params or {}).items():
            np.testing.assert_array_equal(got.params[name], value[:n])


def test_a_request_that_cannot_be_encoded_fails_alone_naming_its_own_row(
    repository: ModelRepository,
) -> None:
    model = repository.get(MODEL)
    options = PredictOptions.create([0.5])
    requests = []
    for i, n in enumerate([3, 5, 4]):
        _, columns = request_rows(n, 800 + 10 * i)
        requests.append((dict(columns), n, options))
    bad = requests[1][0]
    duration = np.asarray(bad["duration_ms"]).astype(object)
    duration[3] = "long"  # text in a numeric column: the encoder refuses that row
    bad["duration_ms"] = duration
    outcomes = _submit(model, requests, max_batch_rows=64, max_queue_delay_s=0.3)
    assert isinstance(outcomes[1], FeatureError), outcomes[1]
    assert outcomes[1].row == 3 and outcomes[1].feature == "duration_ms"
    for i in (0, 2):
        columns, n, opts = requests[i]
        want = _alone(model, columns, n, opts)
        np.testing.assert_array_equal(outcomes[i].quantiles, want.quantiles[:n])


def test_a_split_request_fails_with_its_own_row_number(repository: ModelRepository) -> None:
    model = repository.get(MODEL)
    _, columns = request_rows(40, 1200)
    columns = dict(columns)
    duration = np.asarray(columns["duration_ms"]).astype(object)
    duration[29] = "long"
    columns["duration_ms"] = duration
    [outcome] = _submit(
        model, [(columns, 40, PredictOptions.create())], max_batch_rows=8, max_queue_delay_s=0.0
    )
    assert isinstance(outcome, FeatureError) and outcome.row == 29


def test_a_cancelled_request_never_runs_its_queued_rows(repository: ModelRepository) -> None:
    """A client that leaves cancels its call: rows that have not started are dropped."""
    model = repository.get(MODEL)
    _, columns = request_rows(64, 1500)
    before = scrape_rows()

    async def go() -> None:
        batcher = Batcher(model, BatchConfig(max_batch_rows=8, max_queue_delay_s=0.0))
        try:
            task = asyncio.ensure_future(batcher.predict(columns, 64, PredictOptions.create()))
            await asyncio.sleep(0)  # queued; the loop has not cut more than one batch yet
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.2)
            assert batcher.queued_rows == 0
        finally:
            await batcher.close()

    asyncio.run(go())
    ran = scrape_rows() - before
    assert ran < 64, ran


def scrape_rows() -> float:
    from service import metrics

    return float(metrics.ROWS.labels(MODEL)._value.get())


def test_same_option_requests_over_http_match_the_unbatched_app(
    batched: AppClient, unbatched: AppClient
) -> None:
    sizes = [1, 1, 2, 1, 3, 1, 1, 5]
    options = {"quantiles": [0.2, 0.5, 0.8], "intervals": [[0, 3], [3, None]]}
    bodies = [_body(n, start=91 * i, **options) for i, n in enumerate(sizes)]
    before = scrape(batched)
    answers = batched.gather([_post(b) for b in bodies])
    after = scrape(batched)
    assert [r.status_code for r in answers] == [200] * len(sizes)
    assert delta(before, after, "watchtime_batches_total", model=MODEL) < len(sizes)
    for body, got, n in zip(bodies, answers, sizes, strict=True):
        want = unbatched.post(f"/v1/models/{MODEL}/predict", content=body).json()
        assert got.json()["n"] == n
        for key in (*FIELDS, "quantiles", "intervals"):
            assert got.json()[key] == want[key], key


def test_the_fastapi_routes_answer_as_the_fast_path(
    repository: ModelRepository, batched: AppClient
) -> None:
    """Without the ASGI fast path, FastAPI's own routes serve: the same handlers, the same
    answers and errors (for hosts that mount the app's router elsewhere)."""
    from service.app import create_app
    from service.config import Settings
    from service.protocol.fastpath import FastPath

    app = create_app(Settings(model_repository=MODELS), repository, handle_signals=False)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPath]
    body = _body(3, 40, quantiles=[0.3], intervals=[[0, 5], [5, None]])
    v2_request = v2_body(3, 40, quantiles=[0.5])
    bad = orjson.dumps({"features": {"user_id": [1]}})
    for routed in client_for(app):
        for path, content in [
            (f"/v1/models/{MODEL}/predict", body),
            (f"/v1/models/{MODEL}/versions/2/predict", body),
            ("/v1/predict", bad),
            (f"/v2/models/{MODEL}/infer", v2_request),
        ]:
            got = routed.post(path, content=content)
            want = batched.post(path, content=content)
            assert got.status_code == want.status_code, (path, got.text)
            assert got.json() == want.json(), path
        layer = app.middleware_stack  # built at the first request: the fast path is not in it
        while layer is not None:
            assert not isinstance(layer, FastPath)
            layer = getattr(layer, "app", None)
