"""The batchers of a process: one per loaded model version and event loop, and their
retirement when a version leaves the repository (see :mod:`service.controlplane`)."""

from __future__ import annotations

import asyncio
import weakref

from service.runtime.batcher import BatchConfig, Batcher
from service.runtime.model import ModelRuntime
from service.runtime.worker import WorkerThread


class Batchers:
    """One batcher per loaded model version and event loop, created on first use.

    Under uvicorn there is one loop per process; a host that calls the app from several
    loops (some test clients do) gets a batcher on each, as asyncio objects are bound to one.
    All of them share the process's one worker thread.
    """

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        self.worker = WorkerThread()
        self._by_key: dict[tuple[int, int], Batcher] = {}
        #: models out of the repository: a batcher made for one now retires when idle
        self._retired_models: weakref.WeakSet[ModelRuntime] = weakref.WeakSet()
        #: batchers finishing their last requests (closed too at shutdown)
        self._retiring: set[Batcher] = set()

    def get(self, model: ModelRuntime) -> Batcher:
        key = (id(model), id(asyncio.get_running_loop()))
        batcher = self._by_key.get(key)
        if batcher is None or batcher.model is not model or batcher.loop.is_closed():
            batcher = Batcher(model, self.config, self.worker, self._forget)
            if model in self._retired_models:  # a request that resolved it before the swap
                self._retiring.add(batcher)
                batcher.retire()
            else:
                self._by_key[key] = batcher
        return batcher

    def retire(self, model: ModelRuntime) -> None:
        """``model`` is not served any more: its batchers answer what they hold, then stop."""
        self._retired_models.add(model)
        for key, batcher in list(self._by_key.items()):
            if batcher.model is model:
                del self._by_key[key]
                self._retiring.add(batcher)
                batcher.retire()

    def _forget(self, batcher: Batcher) -> None:
        self._retiring.discard(batcher)

    @property
    def retiring(self) -> int:
        """Batchers of retired models still answering their last requests."""
        return len(self._retiring)

    async def close(self) -> None:
        """Stop the batchers of the running loop; those of other loops are only cancelled."""
        loop = asyncio.get_running_loop()
        batchers = [*self._by_key.values(), *self._retiring]
        self._by_key.clear()
        self._retiring.clear()
        for batcher in batchers:
            if batcher.loop is loop:
                await batcher.close()
            else:
                batcher.abandon()
        self.worker.shutdown(wait=True)
