"""The one prediction pipeline under every protocol: model, admission, batch, deadline, metrics.

A protocol decodes its request into raw columns and options and encodes the Prediction it
gets back; everything between is here, once, and knows neither HTTP nor JSON (MLServer's
``handlers/dataplane.py`` keeps the same split). A request goes

    resolve the model -> admit its rows (before the expensive decoding, where the row count
    is known early) -> fill the columns it left out from the feature store, by id (once, for
    every protocol alike; see :mod:`service.runtime.fill`) -> the model's batcher (one
    batch: encode, onnxruntime, post-process, on the process's worker thread) -> its own
    rows' Prediction

while the protocol's disconnect signal, when it has one, cancels a request whose client
left, so its rows that have not started are never run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from service import metrics
from service.budget import ByteBudget
from service.config import Settings
from service.errors import ClientGone, NotReady
from service.runtime.batchers import Batchers
from service.runtime.fill import FeatureLookup
from service.runtime.model import ModelRuntime
from service.runtime.prediction import Prediction, PredictOptions
from service.runtime.repository import ModelRepository
from service.runtime.state import ServiceState

__all__ = ["DataPlane", "RequestRecord"]

T = TypeVar("T")

LARGE_BODY_BYTES = 256 * 1024
"""Bodies above this are decoded on the process's decoding thread, not the event loop."""


class RequestRecord:
    """What one prediction request reports to the metrics; ``model`` is set once resolved."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.model = metrics.UNKNOWN_MODEL
        self.status = 500


_REASONS = {429: "queue_full", 504: "deadline", 413: "too_large", 400: "invalid", 422: "invalid"}


class DataPlane:
    """Shared by the protocols of one app: the state, the settings and the batchers."""

    def __init__(
        self,
        state: ServiceState,
        settings: Settings,
        batchers: Batchers,
        features: FeatureLookup | None = None,
    ) -> None:
        self.state = state
        self.settings = settings
        self.batchers = batchers
        #: the feature store that fills the columns a request leaves out (None: none)
        self.features = features
        self.body_budget = ByteBudget(settings.max_buffered_body_bytes)
        self._decoder: ThreadPoolExecutor | None = None

    async def decode(
        self,
        decoder: Callable[..., T],
        model: ModelRuntime,
        body: Any,
        *args: Any,
        size: int | None = None,
    ) -> T:
        """``decoder(model, body, *args)``: on the event loop for a body of ordinary size
        (a 256-row body takes about a millisecond), on the decoding thread above
        ``LARGE_BODY_BYTES``, so that it does not stall the other connections. ``body`` is
        the request's bytes, or a message already parsed whose wire ``size`` is given.

        One decoding thread, so that large bodies decode one at a time instead of many
        threads taking the GIL from each other and from the batch worker.
        """
        if (len(body) if size is None else size) <= LARGE_BODY_BYTES:
            return decoder(model, body, *args)
        if self._decoder is None:
            self._decoder = ThreadPoolExecutor(1, thread_name_prefix="watchtime-decode")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decoder, decoder, model, body, *args)

    def fillable(self, model: ModelRuntime) -> frozenset[str]:
        """The model's columns a request may leave out: the feature store fills them by id."""
        if self.features is None:
            return frozenset()
        return self.features.fillable(model.sources)

    def close(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            decoder.shutdown(wait=False)

    # ----------------------------------------------------------------- models

    @property
    def repository(self) -> ModelRepository:
        repository = self.state.repository
        if repository is None:
            raise NotReady()
        return repository

    def model(self, name: str | None, version: str | None = None) -> ModelRuntime:
        """The model a request names (the default one for None); UnknownModelError if none."""
        repository = self.repository
        return repository.default() if name is None else repository.get(name, version)

    # ----------------------------------------------------------------- requests

    def deadline(self, arrival: float, *timeouts_s: float | None) -> float | None:
        """Monotonic deadline: the tightest of the request's timeouts, else the default."""
        given = [t for t in timeouts_s if t is not None]
        if not given and self.settings.default_timeout_ms:
            given = [self.settings.default_timeout_ms / 1000.0]
        return arrival + min(given) if given else None

    def admission(self, model: ModelRuntime) -> Callable[[int], None]:
        """A check that raises QueueFull if the model's queue cannot take ``n`` more rows.

        Decoders call it as soon as they know the row count, before the expensive work. It
        is bound here, on the event loop, so a decoding thread may call it too (it only
        reads the queue's row count).
        """
        return self.batchers.get(model).admit

    async def infer(
        self,
        model: ModelRuntime,
        columns: Mapping[str, np.ndarray],
        n: int,
        options: PredictOptions,
        deadline: float | None = None,
        disconnected: Awaitable[object] | None = None,
    ) -> Prediction:
        """The Prediction of ``n`` rows of raw columns.

        Columns the request left out are looked up first (:meth:`fillable`): on the event
        loop, where a Redis lookup waits without holding a thread, before the rows are queued.

        Raises QueueFull, DeadlineExceeded, FeatureError, FeatureStoreUnavailable, or
        ClientGone once ``disconnected`` completes first (the rows not yet started are then
        dropped).
        """
        metrics.REQUEST_ROWS.labels(model.name).observe(n)
        if self.features is not None:
            try:
                self.batchers.get(model).admit(n)  # a full queue refuses before the lookup
                columns = await self.features.fill(model.sources, columns, n, model.model_tables)
            except BaseException:
                if asyncio.iscoroutine(disconnected):
                    disconnected.close()  # never awaited now
                raise
        work = self.batchers.get(model).predict(columns, n, options, deadline)
        if disconnected is None:
            return await work
        task = asyncio.ensure_future(work)
        watch = asyncio.ensure_future(disconnected)
        try:
            done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            watch.cancel()
        if task in done:
            return task.result()
        task.cancel()
        raise ClientGone()

    @contextmanager
    def observe(self, endpoint: str) -> Iterator[RequestRecord]:
        """Count a request by the status the protocol sets, time it, hold it in flight."""
        record = RequestRecord(endpoint)
        started = time.perf_counter()
        metrics.INFLIGHT.inc()
        try:
            yield record
        finally:
            metrics.INFLIGHT.dec()
            model, status = record.model, record.status
            metrics.REQUESTS.labels(model, endpoint, str(status)).inc()
            metrics.REQUEST_DURATION.labels(model, endpoint).observe(time.perf_counter() - started)
            reason = _REASONS.get(status)
            if reason is not None:
                metrics.REJECTED.labels(model, reason).inc()
