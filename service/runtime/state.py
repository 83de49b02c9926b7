"""Lifecycle of one service process: loading, ready, shutting down. Knows no HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable

from service.runtime.repository import ModelRepository


class ServiceState:
    """What health checks report and what requests are served from.

    Readiness means "send me traffic": true only once every model is loaded and warmed up,
    and false again from the moment a shutdown begins, so that a load balancer stops routing
    here while the requests already in flight still finish.
    """

    def __init__(self, repository: ModelRepository | None = None) -> None:
        self._lock = threading.Lock()
        self._repository = repository
        self._shutting_down = False
        self._on_shutdown: list[Callable[[], None]] = []

    @property
    def repository(self) -> ModelRepository | None:
        return self._repository

    def set_repository(self, repository: ModelRepository) -> None:
        """Serve ``repository`` from now on; a new serving period also ends any earlier drain.

        (An ASGI host may run the lifespan more than once on one app, as test clients do.)
        """
        with self._lock:
            self._repository = repository
            self._shutting_down = False
            self._on_shutdown = []  # the callbacks of an earlier serving period

    @property
    def ready(self) -> bool:
        return self._repository is not None and not self._shutting_down

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def begin_shutdown(self) -> None:
        """Readiness false from now on; called from the signal handler, so only a flag and
        the callbacks of :meth:`on_shutdown` (which must only schedule their work)."""
        if self._shutting_down:
            return
        self._shutting_down = True
        for callback in list(self._on_shutdown):
            callback()

    def on_shutdown(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when a shutdown begins (from a signal handler: it must only
        schedule work, e.g. with ``loop.call_soon_threadsafe``)."""
        self._on_shutdown.append(callback)
