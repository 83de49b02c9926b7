"""The model control plane: which versions serve, changed while the service runs.

``WATCHTIME_MODEL_CONTROL`` picks one of Triton's model control modes:

- ``none``: every version is loaded at start-up; the repository is not read again, and load
  and unload requests are refused.
- ``poll``: every version is loaded at start-up, and the repository is scanned again every
  ``WATCHTIME_POLL_S`` seconds: a new version directory (or one whose files changed) is
  loaded, one that is gone is unloaded. Each worker process polls on its own, so all reach
  the same view within one poll period (plus the load time).
- ``explicit``: the models of ``WATCHTIME_LOAD_MODELS`` (``*``: all) are loaded at start-up;
  after that ``POST /v2/repository/models/{name}/load`` and ``.../unload`` change them. One
  worker process only, since a request reaches one process.

Loading runs on a thread of its own (:class:`~service.runtime.repository.ModelControl` does
the work), never on the event loop or the batch worker's thread, and a version is published
only once it is warmed up. The versions taken out of the index hand their batchers over to
:meth:`~service.runtime.batchers.Batchers.retire`, so the requests they hold finish on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service.config import Settings
from service.errors import ModelControlDisabled, NotReady
from service.runtime.batchers import Batchers
from service.runtime.repository import ModelControl, SyncResult

log = logging.getLogger("watchtime.control")


class ControlPlane:
    """The control mode of one process: its poller, and load and unload on request."""

    def __init__(self, batchers: Batchers, settings: Settings) -> None:
        self._control: ModelControl | None = None
        self.batchers = batchers
        self.mode = settings.model_control
        self.poll_s = settings.poll_s
        self._executor: ThreadPoolExecutor | None = None
        self._poller: asyncio.Task[None] | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The one thread that loads models (a load never waits behind a batch, nor a batch
        behind a load, except for the CPU they share)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="watchtime-load")
        return self._executor

    @property
    def control(self) -> ModelControl:
        """The repository's control; NotReady (503) before the start-up load is done."""
        if self._control is None:
            raise NotReady()
        return self._control

    @property
    def attached(self) -> ModelControl | None:
        return self._control

    def attach(self, control: ModelControl) -> None:
        """Answer the repository extension from ``control`` (its start-up load done)."""
        self._control = control

    def start(self, control: ModelControl) -> None:
        """Take over ``control`` and start polling in poll mode."""
        self._control = control
        if self.mode == "poll":
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def close(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        executor, self._executor = self._executor, None
        if executor is not None:  # a load under way finishes on its own; nobody waits for it
            executor.shutdown(wait=False, cancel_futures=True)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:  # a scan that fails (the directory unreadable) is tried again
                log.exception("repository poll failed")

    async def poll(self) -> SyncResult:
        """One scan of the repository: load what is new or changed, unload what is gone."""
        result = await self._run(self.control.sync)
        if result.changed or result.refused:
            log.info(
                "repository poll: loaded %s, unloaded %s, refused %s",
                result.loaded or "nothing",
                result.removed or "nothing",
                [f.label for f in result.refused] or "nothing",
            )
        return result

    async def load(self, name: str) -> SyncResult:
        """Load or reload ``name`` (explicit mode only)."""
        self._require_explicit()
        return await self._run(self.control.load, name)

    async def unload(self, name: str) -> SyncResult:
        """Stop serving ``name`` (explicit mode only)."""
        self._require_explicit()
        return await self._run(self.control.unload, name)

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        return self.control.index(ready_only)

    def _require_explicit(self) -> None:
        if self.mode != "explicit":
            raise ModelControlDisabled(self.mode)

    async def _run(self, work: Any, *args: Any) -> SyncResult:
        """``work(*args)`` on the loading thread; the retired models' batchers then finish
        their requests and stop (also when ``work`` raises after publishing)."""
        loop = asyncio.get_running_loop()
        control = self.control
        try:
            result: SyncResult = await loop.run_in_executor(self.executor, work, *args)
        finally:
            for model in control.take_retired():
                self.batchers.retire(model)
        return result
