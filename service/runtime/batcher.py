"""Dynamic batching: every step of a prediction done once per batch, not once per request.

Many ranking clients send small requests at once. Each model version has one
:class:`Batcher`: a queue of decoded requests (raw columns and options), drained by one task
that cuts a batch once ``max_batch_rows`` rows are waiting or the oldest request has waited
``max_queue_delay_ms``. A batch is then feature-encoded, run through onnxruntime and
post-processed as one block of rows, whatever mix of options its requests asked for, so a
tiny request costs a share of a few numpy calls instead of hundreds of its own. A request
larger than ``max_batch_rows`` is cut across runs and reassembled in order.

All numpy work runs on one thread per process, shared by every model
(:class:`WorkerThread`): numpy holds the GIL for small arrays, and several threads making
small numpy calls are slower than one. onnxruntime runs on a second thread (it releases the
GIL), and two batches of a model may be in flight, so one batch's run overlaps the next
one's encoding or the last one's post-processing. The event loop keeps the sockets, the
JSON and the queue.

The queue is bounded in rows: past ``max_queue_rows`` a request is refused at once
(:class:`QueueFull`), so overload shows as fast 429s instead of growing latency. A request
may carry a deadline; rows whose deadline passes while queued are dropped before they are
encoded (:class:`DeadlineExceeded`). A request whose client went away is abandoned the same
way: its rows that have not started are never run.

A row's answer never depends on the rows it shares a run with. Encoding and post-processing
work row by row. onnxruntime's CPU GEMM (MLAS) computes rows in blocks of four, and a row in
the ragged last block can differ in the last float32 bit from the same row in a full block,
so the model pads every run to a multiple of
:data:`~service.runtime.model.ROW_BLOCK` rows, which makes every row's output bit-identical
whatever batch it landed in.

A request whose rows cannot be encoded or post-processed fails alone: the error names its
own row, and its batch-mates are answered.

A model version taken out of the repository (replaced by a new one, or unloaded) keeps its
batcher until the requests that resolved it are answered: :meth:`Batchers.retire` lets the
batcher run what it holds, and its loop ends once it is idle. A request that resolved the
old version just before the swap and reaches the batcher after it still runs there (the loop
starts again for it), so no request fails because a version changed under it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np

from service import metrics
from service.errors import DeadlineExceeded, FeatureError, QueueFull
from service.runtime.lookup import STORED
from service.runtime.model import ModelRuntime
from service.runtime.postprocess import Params
from service.runtime.prediction import Prediction, PredictOptions
from service.runtime.worker import WorkerThread


@dataclass(frozen=True)
class BatchConfig:
    """The batching knobs (validated by the settings)."""

    enabled: bool = True
    max_batch_rows: int = 256
    max_queue_delay_s: float = 0.002
    max_queue_rows: int = 50_000


@dataclass(eq=False)
class _Pending:
    columns: Mapping[str, np.ndarray]
    n: int
    options: PredictOptions
    deadline: float | None
    enqueued: float
    future: asyncio.Future[Prediction]
    taken: int = 0
    started: bool = False
    abandoned: bool = False
    delivered: int = 0
    parts: list[tuple[int, Prediction]] = field(default_factory=list)

    @property
    def left(self) -> int:
        return self.n - self.taken


@dataclass(frozen=True)
class _Piece:
    """Rows ``first:first + count`` of one queued request, as one block of a batch."""

    item: _Pending
    first: int
    count: int


@dataclass
class _Encoded:
    """A batch between its stages: model inputs, their rows, and the blocks still live."""

    tensors: dict[str, np.ndarray]
    rows: int
    live: list[int]
    outcomes: list[Prediction | Exception | None]


PIPELINE = 2
"""Batches of one model in flight at once: one in onnxruntime while another is encoded or
post-processed."""


def merge_columns(
    sources: Sequence[str], blocks: Sequence[tuple[Mapping[str, np.ndarray], int, int]]
) -> dict[str, np.ndarray]:
    """One array per column over row blocks ``(columns, first, count)``, in block order.

    Besides ``sources``, the statistics a store read for the rows (``__stored__.`` columns,
    :mod:`service.runtime.lookup`): every request of a model has them or none does."""
    if not blocks:
        return {}
    stored = [name for name in blocks[0][0] if name.startswith(STORED)]
    if stored:
        sources = [*sources, *stored]
    if len(blocks) == 1:
        columns, first, count = blocks[0]
        if first == 0 and all(len(columns[s]) == count for s in sources):
            return {s: columns[s] for s in sources}
        return {s: columns[s][first : first + count] for s in sources}
    return {s: np.concatenate([c[s][a : a + k] for c, a, k in blocks]) for s in sources}


def _observe(model: str, results: Sequence[Prediction], postprocess_s: float) -> None:
    """Post-processing time of a batch and the drift histograms of the numbers it served."""
    metrics.POSTPROCESS_DURATION.labels(model).observe(postprocess_s)
    means = results[0].mean if len(results) == 1 else np.concatenate([r.mean for r in results])
    skips = (
        results[0].quick_skip_prob
        if len(results) == 1
        else np.concatenate([r.quick_skip_prob for r in results])
    )
    metrics.observe_many(metrics.PREDICTED_WATCH_TIME.labels(model), means)
    metrics.observe_many(metrics.PREDICTED_QUICK_SKIP.labels(model), skips)


class Batcher:
    """The queue and the run loop of one loaded model version (lives on one event loop)."""

    def __init__(
        self,
        model: ModelRuntime,
        config: BatchConfig,
        worker: WorkerThread | None = None,
        on_idle: Callable[[Batcher], None] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self._label = model.name
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._own_worker = worker is None
        self._worker = worker if worker is not None else WorkerThread()
        self.loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(PIPELINE if config.enabled else 1)
        self._inflight: set[asyncio.Task[None]] = set()
        self._retiring = False
        self._on_idle = on_idle
        self._task = self.loop.create_task(self._loop())
        self._last_run_s = 0.0

    def retire(self) -> None:
        """Run what is queued and in flight, then end the loop (the model is not served
        any more); a late request starts it again (see :meth:`predict`)."""
        self._retiring = True
        self._wakeup.set()

    @property
    def idle(self) -> bool:
        return not self._queue and not self._inflight

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def admit(self, n: int) -> None:
        """QueueFull unless ``n`` more rows fit: asked before a request's expensive decoding.

        A request is never refused for its size alone while the queue is empty.
        """
        limit = self.config.max_queue_rows
        if self._queued_rows and self._queued_rows + n > limit:
            raise QueueFull(self._queued_rows, limit, self._retry_after())

    async def predict(
        self,
        columns: Mapping[str, np.ndarray],
        n: int,
        options: PredictOptions,
        deadline: float | None = None,
    ) -> Prediction:
        """The answer for ``n`` rows of raw columns (``deadline``: monotonic seconds).

        Raises QueueFull, DeadlineExceeded or FeatureError (naming a row of this request).
        Cancelling the call (the client went away) drops the rows that have not started.
        """
        self.admit(n)
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded()
        if self._task.done() and not self.loop.is_closed():
            # a retired batcher whose loop ended while this request was on its way to it
            self._task = self.loop.create_task(self._loop())
        future: asyncio.Future[Prediction] = self.loop.create_future()
        item = _Pending(columns, n, options, deadline, now, future)
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
        """Drop the rows of a request nobody waits for any more (not answered yet)."""
        if not item.future.done():
            self._release(item)

    def _release(self, item: _Pending) -> None:
        """Take the request's rows that have not started out of the queue, once."""
        if not item.abandoned:
            item.abandoned = True
            self._add_queued(-item.left)
            item.taken = item.n

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
                self._release(item)
                if not item.future.done():
                    item.future.set_exception(DeadlineExceeded())
                continue
            kept.append(item)
        self._queue = kept

    def _cut(self) -> list[_Piece]:
        """The next batch: row slices from the head of the queue."""
        budget = self.config.max_batch_rows if self.config.enabled else None
        batch: list[_Piece] = []
        while self._queue:
            item = self._queue[0]
            if item.abandoned:
                self._queue.popleft()
                continue
            take = item.left if budget is None else min(item.left, budget)
            batch.append(_Piece(item, item.taken, take))
            item.started = True
            item.taken += take
            self._add_queued(-take)
            if item.left == 0:
                self._queue.popleft()
            if budget is None:
                break
            budget -= take
            if budget <= 0:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_dead(time.monotonic())
            if not self._queue:
                if self._retiring and not self._inflight:
                    if self._on_idle is not None:
                        self._on_idle(self)
                    return
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
            await self._slots.acquire()  # at most PIPELINE batches in flight
            self._drop_dead(time.monotonic())
            batch = self._cut()
            if not batch:
                self._slots.release()
                continue
            started = time.monotonic()
            for piece in batch:
                if piece.first == 0:
                    wait_s = started - piece.item.enqueued
                    metrics.QUEUE_DURATION.labels(self._label).observe(wait_s)
            task = loop.create_task(self._process(batch))
            self._inflight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        if self._retiring:
            self._wakeup.set()  # the loop may end once the last batch is delivered

    async def _process(self, batch: list[_Piece]) -> None:
        """One batch through the stages: encode, onnxruntime, post-process, deliver.

        Encoding and post-processing run on the worker thread, onnxruntime on a thread of its
        own, so one batch's run overlaps the next batch's encoding and the last one's
        post-processing (onnxruntime releases the GIL; the numpy work stays on one thread).
        """
        loop = asyncio.get_running_loop()
        try:
            encoded = await loop.run_in_executor(self._worker.executor, self._prepare, batch)
            params = None
            if encoded.live:
                params = await loop.run_in_executor(
                    self._worker.runner, self._run, encoded.tensors, encoded.rows
                )
            outcomes = await loop.run_in_executor(
                self._worker.executor, self._finish, batch, encoded, params
            )
        except Exception as exc:  # the model failed: every request in the run learns why
            for piece in batch:
                self._fail(piece.item, exc)
            return
        self._deliver(batch, outcomes)

    # ----------------------------------------------------------------- the worker thread

    def _prepare(self, batch: list[_Piece]) -> _Encoded:
        """The batch's model inputs; blocks that cannot be encoded are answered with why."""
        outcomes: list[Prediction | Exception | None] = [None] * len(batch)
        live = list(range(len(batch)))
        tensors = self._encode(batch, live, outcomes)
        rows = sum(batch[i].count for i in live)
        return _Encoded(tensors, rows, live, outcomes)

    def _finish(
        self, batch: list[_Piece], encoded: _Encoded, params: Params | None
    ) -> list[Prediction | Exception]:
        """Post-process the batch's rows as one block (worker thread)."""
        live, outcomes = encoded.live, encoded.outcomes
        if live and params is not None:
            started = time.perf_counter()
            answers = self.model.postprocess_batch(
                params, [(batch[i].count, batch[i].item.options) for i in live]
            )
            elapsed = time.perf_counter() - started
            served: list[Prediction] = []
            for i, answer in zip(live, answers, strict=True):
                if isinstance(answer, FeatureError) and answer.row is not None:
                    answer = answer.at_row(answer.row + batch[i].first)
                outcomes[i] = answer
                if isinstance(answer, Prediction):
                    served.append(answer)
            if served:
                _observe(self.model.name, served, elapsed)
        return [o if o is not None else RuntimeError("row block not answered") for o in outcomes]

    def _encode(
        self,
        batch: list[_Piece],
        live: list[int],
        outcomes: list[Prediction | Exception | None],
    ) -> dict[str, np.ndarray]:
        """Model inputs of the live blocks; a block that fails is taken out and named."""
        sources = self.model.sources
        blocks = {i: (batch[i].item.columns, batch[i].first, batch[i].count) for i in live}
        while live:
            try:
                return self.model.encode(merge_columns(sources, [blocks[i] for i in live]))
            except FeatureError as exc:
                culprit = self._culprit(batch, live, exc)
                if culprit is not None:
                    index, row = culprit
                    outcomes[index] = exc.at_row(row)
                    live.remove(index)
                    continue
                # Not tied to a merged row (a column's type): encode each block alone.
                failed = False
                for i in list(live):
                    try:
                        self.model.encode(merge_columns(sources, [blocks[i]]))
                    except FeatureError as alone:
                        own = None if alone.row is None else alone.row + batch[i].first
                        outcomes[i] = alone.at_row(own)
                        live.remove(i)
                        failed = True
                if not failed:
                    raise
        return {}

    @staticmethod
    def _culprit(batch: list[_Piece], live: list[int], exc: FeatureError) -> tuple[int, int] | None:
        """The block holding the merged row ``exc.row``, and that row within its request."""
        if exc.row is None:
            return None
        offset = 0
        for i in live:
            piece = batch[i]
            if exc.row < offset + piece.count:
                return i, piece.first + exc.row - offset
            offset += piece.count
        return None

    def _run(self, tensors: dict[str, np.ndarray], rows: int) -> Params:
        """One onnxruntime run over the batch's rows, padded to the row block."""
        started = time.perf_counter()
        params = self.model.run(tensors)
        elapsed = time.perf_counter() - started
        self._last_run_s = elapsed
        label = self._label
        metrics.INFERENCE_DURATION.labels(label).observe(elapsed)
        metrics.BATCH_ROWS.labels(label).observe(rows)
        metrics.ROWS.labels(label).inc(rows)
        metrics.BATCHES.labels(label).inc()
        return params

    # ----------------------------------------------------------------- back on the loop

    def _fail(self, item: _Pending, exc: BaseException) -> None:
        if not item.future.done():
            item.future.set_exception(exc)
        self._release(item)

    def _deliver(self, batch: list[_Piece], outcomes: list[Prediction | Exception]) -> None:
        for piece, outcome in zip(batch, outcomes, strict=True):
            item = piece.item
            if item.future.done():
                continue
            if isinstance(outcome, Exception):
                self._fail(item, outcome)
                continue
            item.parts.append((piece.first, outcome))
            item.delivered += piece.count
            if item.delivered == item.n:
                if len(item.parts) == 1:
                    whole = item.parts[0][1]
                else:  # batches may finish out of order: the parts go back in row order
                    whole = Prediction.concat([p for _, p in sorted(item.parts, key=itemgetter(0))])
                item.future.set_result(whole)

    async def close(self) -> None:
        """Stop the run loop (after the server has drained its requests)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for task in list(self._inflight):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for item in self._queue:
            if not item.future.done():
                item.future.cancel()
        if self._own_worker:
            self._worker.shutdown(wait=True)

    def abandon(self) -> None:
        """Stop from outside the batcher's loop (which may be closed already)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._task.cancel)
        if self._own_worker:
            self._worker.shutdown(wait=False)
