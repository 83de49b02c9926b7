"""Dynamic batching: rows of concurrent requests merged into one onnxruntime run per model.

Many ranking clients send small requests at once; one onnxruntime run over their merged rows
costs little more than one run over a single request's. Each model version has one
:class:`Batcher`: an asyncio queue of encoded requests, drained by one task that cuts a batch
once ``max_batch_rows`` rows are waiting or the oldest request has waited
``max_queue_delay_ms``, and runs it on the model's own single-thread executor, so the event
loop never blocks and runs of one model never fight over cores (onnxruntime's own thread
counts stay configuration). A request larger than ``max_batch_rows`` is cut across runs and
reassembled in order.

The queue is bounded in rows: past ``max_queue_rows`` a request is refused at once
(:class:`QueueFull`), so overload shows as fast 429s instead of growing latency. A request
may carry a deadline; rows whose deadline passes while queued are dropped before they reach
onnxruntime (:class:`DeadlineExceeded`).

A row's result never depends on the rows it shares a run with: onnxruntime's CPU GEMM
(MLAS) computes rows in blocks of four, and a row in the ragged last block can differ in
the last float32 bit from the same row in a full block. Every run is therefore padded to a
multiple of :data:`ROW_BLOCK` rows (by repeating its last row), which makes every row's
output bit-identical whatever batch it landed in.

Post-processing is merged too: the requests of a run that are answered whole by it and ask
for the same options (quantile levels, intervals, threshold) are post-processed in one
vectorized call over their merged rows, in the run's executor thread. The post-processor
works row by row (no statistic of one row reads another), so each request's numbers are the
same as when post-processed alone; a group that fails (some row has no finite distribution)
is left to each request to post-process on its own, so the error names that request's row.
A request alone in its group is post-processed by its caller as before, which keeps the
model's executor free for the next run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service import metrics
from service.runtime.inference import (
    FloatArray,
    InvalidInput,
    Prediction,
    PredictOptions,
    postprocess,
    run_model,
    slice_prediction,
)
from service.runtime.repository import LoadedModel

ROW_BLOCK = 8
"""Runs are padded to a multiple of this many rows (see the module docstring)."""


class QueueFull(Exception):
    """The queue holds too many rows to take this request; retry after ``retry_after_s``."""

    def __init__(self, queued: int, limit: int, retry_after_s: int) -> None:
        super().__init__(f"{queued} rows queued, the limit is {limit}")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Exception):
    """The request's deadline passed before its rows were run."""


@dataclass(frozen=True)
class BatchConfig:
    """The batching knobs (validated by the settings)."""

    enabled: bool = True
    max_batch_rows: int = 256
    max_queue_delay_s: float = 0.002
    max_queue_rows: int = 50_000


@dataclass(frozen=True)
class BatchResult:
    """A request's family parameters and, when its batch post-processed it, its Prediction.

    ``postprocess_s`` is the time of the merged post-processing call that produced it.
    """

    params: dict[str, FloatArray]
    prediction: Prediction | None = None
    postprocess_s: float = 0.0


@dataclass(eq=False)
class _Pending:
    tensors: Mapping[str, np.ndarray]
    n: int
    deadline: float | None
    enqueued: float
    future: asyncio.Future[BatchResult]
    options: PredictOptions | None = None
    taken: int = 0
    started: bool = False
    abandoned: bool = False
    delivered: int = 0
    parts: list[dict[str, FloatArray]] = field(default_factory=list)
    result: BatchResult | None = None

    @property
    def left(self) -> int:
        return self.n - self.taken


def pad_rows(tensors: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Tensors padded to a multiple of ROW_BLOCK rows by repeating the last row."""
    target = -(-n // ROW_BLOCK) * ROW_BLOCK
    if target == n or n == 0:
        return dict(tensors)
    index = np.minimum(np.arange(target), n - 1)
    return {name: np.take(t, index, axis=0) for name, t in tensors.items()}


class Batcher:
    """The queue and the run loop of one loaded model version (lives on one event loop)."""

    def __init__(self, model: LoadedModel, config: BatchConfig) -> None:
        self.model = model
        self.config = config
        self._label = model.name
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"ort-{model.name}")
        self.loop = asyncio.get_running_loop()
        self._task = self.loop.create_task(self._loop())
        self._last_run_s = 0.0

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def run(
        self, tensors: Mapping[str, np.ndarray], n: int, deadline: float | None = None
    ) -> dict[str, FloatArray]:
        """Family parameters for ``n`` encoded rows, in order (``deadline``: monotonic s)."""
        return (await self.predict(tensors, n, deadline)).params

    async def predict(
        self,
        tensors: Mapping[str, np.ndarray],
        n: int,
        deadline: float | None = None,
        options: PredictOptions | None = None,
    ) -> BatchResult:
        """Parameters of ``n`` encoded rows and, if merged with others, their Prediction.

        With ``options`` the batch may post-process this request together with batch-mates
        that ask the same; without, only the parameters come back.
        """
        limit = self.config.max_queue_rows
        if self._queued_rows and self._queued_rows + n > limit:
            raise QueueFull(self._queued_rows, limit, self._retry_after())
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded()
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        item = _Pending(tensors, n, deadline, now, future, options)
        self._queue.append(item)
        self._add_queued(n)
        self._wakeup.set()
        try:
            if deadline is None:
                return await asyncio.shield(future)
            try:
                return await asyncio.wait_for(asyncio.shield(future), deadline - now)
            except TimeoutError:
                if item.started:  # its rows are already running: the answer is near
                    return await asyncio.shield(future)
                self._abandon(item)
                raise DeadlineExceeded() from None
        except asyncio.CancelledError:  # the client went away: do not compute its rows
            self._abandon(item)
            raise

    def _abandon(self, item: _Pending) -> None:
        if not item.abandoned and not item.future.done():
            item.abandoned = True
            self._add_queued(-item.left)

    def _add_queued(self, rows: int) -> None:
        self._queued_rows += rows
        metrics.QUEUE_ROWS.labels(self._label).inc(rows)

    def _retry_after(self) -> int:
        """Seconds until the queue has likely drained: whole seconds, at least one."""
        runs = self._queued_rows / self.config.max_batch_rows
        return max(1, math.ceil(runs * self._last_run_s + self.config.max_queue_delay_s))

    def _drop_dead(self, now: float) -> None:
        """Forget abandoned items and fail those whose deadline passed (not yet started)."""
        kept: collections.deque[_Pending] = collections.deque()
        for item in self._queue:
            if item.abandoned:
                continue
            if item.deadline is not None and item.deadline <= now and not item.started:
                self._add_queued(-item.left)
                item.abandoned = True
                if not item.future.done():
                    item.future.set_exception(DeadlineExceeded())
                continue
            kept.append(item)
        self._queue = kept

    def _cut(self) -> list[tuple[_Pending, int, int]]:
        """The next batch: (item, first row, row count) slices from the head of the queue."""
        if not self.config.enabled:
            item = self._queue.popleft()
            item.started = True
            self._add_queued(-item.left)
            piece = (item, item.taken, item.left)
            item.taken = item.n
            return [piece]
        budget = self.config.max_batch_rows
        batch: list[tuple[_Pending, int, int]] = []
        while self._queue and budget > 0:
            item = self._queue[0]
            take = min(item.left, budget)
            batch.append((item, item.taken, take))
            item.started = True
            item.taken += take
            budget -= take
            self._add_queued(-take)
            if item.left == 0:
                self._queue.popleft()
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_dead(time.monotonic())
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.config.enabled and self._queued_rows < self.config.max_batch_rows:
                wait = self._queue[0].enqueued + self.config.max_queue_delay_s - time.monotonic()
                if wait > 0:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), wait)
                    continue
            batch = self._cut()
            started = time.monotonic()
            for item, first, _ in batch:
                if first == 0:
                    metrics.QUEUE_DURATION.labels(self._label).observe(started - item.enqueued)
            try:
                outputs = await loop.run_in_executor(self._executor, self._execute, batch)
            except Exception as exc:  # the model failed: every request in the run learns why
                for item, _, _ in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self._deliver(batch, outputs)

    def _execute(self, batch: list[tuple[_Pending, int, int]]) -> dict[str, FloatArray]:
        """One run over the batch's rows, then merged post-processing (executor thread)."""
        outputs = self._infer(batch)
        self._postprocess_groups(batch, outputs)
        return outputs

    def _postprocess_groups(
        self, batch: list[tuple[_Pending, int, int]], outputs: dict[str, FloatArray]
    ) -> None:
        """Post-process at once the whole requests of the batch that ask the same options."""
        groups: dict[tuple[object, ...], list[tuple[_Pending, int]]] = {}
        offset = 0
        for item, first, count in batch:
            if item.options is not None and first == 0 and count == item.n:
                groups.setdefault(item.options.key(), []).append((item, offset))
            offset += count
        for members in groups.values():
            if len(members) < 2:
                continue
            index = np.concatenate([np.arange(a, a + it.n) for it, a in members])
            merged = {k: v[index] for k, v in outputs.items()}
            options = members[0][0].options
            assert options is not None
            started = time.perf_counter()
            try:
                whole = postprocess(self.model, merged, options)
            except (InvalidInput, ValueError, ArithmeticError):  # each request alone names its row
                continue
            elapsed = time.perf_counter() - started
            start = 0
            for item, a in members:
                part = slice_prediction(whole, start, start + item.n)
                params = {k: v[a : a + item.n] for k, v in outputs.items()}
                item.result = BatchResult(params, part, elapsed)
                start += item.n

    def _infer(self, batch: list[tuple[_Pending, int, int]]) -> dict[str, FloatArray]:
        """One onnxruntime run over the batch's rows (in the model's executor thread)."""
        names = list(batch[0][0].tensors)
        if len(batch) == 1:
            item, first, count = batch[0]
            merged = {k: item.tensors[k][first : first + count] for k in names}
        else:
            merged = {
                k: np.concatenate([it.tensors[k][a : a + c] for it, a, c in batch]) for k in names
            }
        rows = sum(c for _, _, c in batch)
        started = time.perf_counter()
        params = run_model(self.model, pad_rows(merged, rows))
        elapsed = time.perf_counter() - started
        self._last_run_s = elapsed
        label = self._label
        metrics.INFERENCE_DURATION.labels(label).observe(elapsed)
        metrics.BATCH_ROWS.labels(label).observe(rows)
        metrics.ROWS.labels(label).inc(rows)
        metrics.BATCHES.labels(label).inc()
        return {k: v[:rows] for k, v in params.items()}

    def _deliver(
        self, batch: list[tuple[_Pending, int, int]], outputs: dict[str, FloatArray]
    ) -> None:
        offset = 0
        for item, _, count in batch:
            part = {k: v[offset : offset + count] for k, v in outputs.items()}
            offset += count
            if item.future.done():
                continue
            if item.result is not None:  # answered whole by this run, post-processed
                item.future.set_result(item.result)
                continue
            item.parts.append(part)
            item.delivered += count
            if item.delivered == item.n:
                if len(item.parts) == 1:
                    item.future.set_result(BatchResult(item.parts[0]))
                else:
                    merged = {k: np.concatenate([p[k] for p in item.parts]) for k in part}
                    item.future.set_result(BatchResult(merged))

    async def close(self) -> None:
        """Stop the run loop and the executor (after the server has drained its requests)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for item in self._queue:
            if not item.future.done():
                item.future.cancel()
        self._executor.shutdown(wait=True)

    def abandon(self) -> None:
        """Stop from outside the batcher's loop (which may be closed already)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._task.cancel)
        self._executor.shutdown(wait=False)


class Batchers:
    """One batcher per loaded model version and event loop, created on first use.

    Under uvicorn there is one loop per process; a host that calls the app from several
    loops (some test clients do) gets a batcher on each, as asyncio objects are bound to one.
    """

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        self._by_key: dict[tuple[int, int], Batcher] = {}

    def get(self, model: LoadedModel) -> Batcher:
        key = (id(model), id(asyncio.get_running_loop()))
        batcher = self._by_key.get(key)
        if batcher is None or batcher.model is not model or batcher.loop.is_closed():
            batcher = Batcher(model, self.config)
            self._by_key[key] = batcher
        return batcher

    async def close(self) -> None:
        """Stop the batchers of the running loop; those of other loops are only cancelled."""
        loop = asyncio.get_running_loop()
        batchers = list(self._by_key.values())
        self._by_key.clear()
        for batcher in batchers:
            if batcher.loop is loop:
                await batcher.close()
            else:
                batcher.abandon()
