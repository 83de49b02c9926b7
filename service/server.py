"""Running uvicorn: one worker in this process, or a supervisor of several worker processes.

uvicorn's own ``uvicorn.run`` is replaced here for two reasons:

- With ``--workers N`` its supervisor stops when a worker fails to start (exit status 3, a
  model repository that cannot be served), but the parent then exits 0, so a process
  manager cannot tell a failed start-up from a clean stop. :func:`run` returns 3 for both
  worker counts.
- When a worker dies without its own shutdown (``kill -9``, the OOM killer) the supervisor
  starts a new one, but the dead worker's live gauges (requests in flight, queued rows)
  stay in the merged ``/metrics`` for good. :class:`Supervisor` removes them with
  prometheus-client's ``mark_process_dead``, as a worker does itself when it stops cleanly.

And the HTTP protocol is uvicorn's httptools one with the limits it lacks
(:class:`GuardedHttpToolsProtocol`), because hostile or broken clients otherwise hold the
process: uvicorn arms no timer on a new connection until its first response (a connection
that never sends a byte stays open for good), bounds neither the time to send the headers or
the body nor the size of the headers (a 128 MiB header was buffered and answered), and caps
connections only by answering 503 once they are all open. Here, per worker:

- ``max_header_bytes``: a request line and headers over it get 431 (414 for the URL alone),
  checked while they arrive, so no more than the limit plus one read is ever buffered;
- ``header_timeout_s``: a connection that has not sent a whole request line and headers this
  long after it opened (or after the first byte of a later request on it) gets 408, or is
  closed without an answer when it sent nothing at all;
- ``body_timeout_s``: a request whose body is not complete this long after its headers gets
  408 (time during which the server itself holds the client back, its reading paused or a
  ``100 Continue`` not sent yet, does not count);
- ``max_connections``: a new connection past the cap closes the oldest idle one (no request
  being served: silent, in its headers, or kept alive between requests); only when every
  connection is busy with a request is the new one refused (closed at once).

Each refusal answers with ``Connection: close`` and then reads and drops what the client is
still sending for a moment (a "lingering close", as nginx does), so that the client reads
the answer instead of a reset. Every closing is counted in
``watchtime_connections_closed_total{reason}`` and logged, summed, at most every 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from asyncio import TimerHandle
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvicorn
from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors.multiprocess import Multiprocess

from service import metrics
from service.config import Settings

log = logging.getLogger("watchtime.server")

LOG_INTERVAL_S = 10.0
"""At most one summary line of closed connections per this many seconds and worker."""

LINGER_S = 2.0
LINGER_BYTES = 1 << 20
"""After a refusal, how long and how much of what the client still sends is read and dropped."""

FD_RESERVE = 256
"""File descriptors a worker needs besides its connections (models, metrics files, pipes)."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The per-worker limits of :class:`GuardedHttpToolsProtocol`."""

    max_connections: int = 2048
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_connections=settings.max_connections,
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.timeout_request_header_s,
            body_timeout_s=settings.timeout_request_body_s,
        )


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config carrying the connection limits (pickled with it into each worker)."""

    def __init__(self, app: str, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits


def fd_budget_error(max_connections: int) -> str | None:
    """Make room for ``max_connections`` in this process's file-descriptor limit (workers
    inherit it): raise the soft limit when the hard one allows, else say why it cannot."""
    need = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    if hard == resource.RLIM_INFINITY or hard >= need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return None
    return (
        f"WATCHTIME_MAX_CONNECTIONS={max_connections} needs {need} file descriptors per "
        f"worker, but their limit (ulimit -n) is {hard}: lower it or raise the limit"
    )


class _Connections:
    """One worker's bookkeeping: idle connections oldest first, and the closing summary."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: ConnectionLimits) -> None:
        self.loop = loop
        self.limits = limits
        self.idle: dict[GuardedHttpToolsProtocol, None] = {}
        self.closed: Counter[str] = Counter()
        self.flush: TimerHandle | None = None
        self.last_flush = -LOG_INTERVAL_S

    def evict_idle(self) -> bool:
        """Close the connection idle the longest; False when none is idle."""
        while self.idle:
            oldest = next(iter(self.idle))
            del self.idle[oldest]
            if not oldest.transport.is_closing():
                oldest.close_connection("idle_evicted")
                return True
        return False

    def record(self, reason: str) -> None:
        metrics.CONNECTIONS_CLOSED.labels(reason).inc()
        self.closed[reason] += 1
        if self.flush is None:
            delay = max(0.0, self.last_flush + LOG_INTERVAL_S - self.loop.time())
            self.flush = self.loop.call_later(delay, self._log)

    def _log(self) -> None:
        self.flush = None
        self.last_flush = self.loop.time()
        limits = self.limits
        why = {
            "header_timeout": f"headers not in within {limits.header_timeout_s:g} s",
            "body_timeout": f"body not in within {limits.body_timeout_s:g} s",
            "header_too_large": f"headers over {limits.max_header_bytes} bytes",
            "idle_evicted": f"idle, closed for a new one at {limits.max_connections} open",
            "over_capacity": f"refused, {limits.max_connections} open and none idle",
        }
        parts = [f"{n} {why.get(reason, reason)}" for reason, n in sorted(self.closed.items())]
        self.closed.clear()
        log.warning("closed connections (per-worker limits): %s", "; ".join(parts))


def _bookkeeping(
    server_state: ServerState, limits: ConnectionLimits, loop: asyncio.AbstractEventLoop
) -> _Connections:
    found = getattr(server_state, "watchtime_connections", None)
    if found is None:
        found = _Connections(loop, limits)
        server_state.watchtime_connections = found  # type: ignore[attr-defined]
    assert isinstance(found, _Connections)
    return found


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


_REASON_PHRASES = {
    408: "the request was not sent in time",
    414: "the request URL is too long",
    431: "the request headers are too large",
}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header, timing and connection limits (see above)."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = config.limits if isinstance(config, GuardedConfig) else ConnectionLimits()
        self.limits = limits
        self.book = _bookkeeping(server_state, limits, self.loop)
        self.read_timer: TimerHandle | None = None
        self.read_phase: str | None = None  # "header" or "body": what the timer waits for
        self.in_headers = False
        self.header_bytes = 0
        self.refused = False
        self.lingered = 0

    # --- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        crowded = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        metrics.OPEN_CONNECTIONS.inc()
        if crowded and not self.book.evict_idle():
            self.close_connection("over_capacity")
            return
        self.book.idle[self] = None
        self._arm("header", self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.book.idle.pop(self, None)
        self._disarm()
        metrics.OPEN_CONNECTIONS.dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # lingering after an answer: drop what still comes, within bounds
            self.lingered += len(data)
            if self.lingered > LINGER_BYTES:
                self.transport.close()
            return
        started_in_headers = self.in_headers
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.refused:  # a callback refused the request and answered already
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.in_headers:
            if started_in_headers:  # bytes of headers that are still not complete
                self.header_bytes += len(data)
                if self.header_bytes > self.limits.max_header_bytes:
                    self._refuse_headers()
                    return
            if self.read_phase != "header":
                self._arm("header", self.limits.header_timeout_s)
        elif self.cycle is not None and self.cycle.more_body:
            if self.read_phase != "body":
                self._arm("body", self.limits.body_timeout_s)
        elif self.read_phase is not None:
            self._disarm()

    # --- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_headers = True
        self.header_bytes = 0

    def on_headers_complete(self) -> None:
        self.in_headers = False
        if self.read_phase == "header":
            self._disarm()
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse_headers()
            raise _Refused
        super().on_headers_complete()
        self.book.idle.pop(self, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self.refused:
            return
        if self.cycle is None or self.cycle.response_complete:
            self.book.idle.pop(self, None)
            self.book.idle[self] = None  # the newest idle connection

    # --- limits

    def _arm(self, phase: str, delay: float) -> None:
        self._disarm()
        self.read_phase = phase
        self.read_timer = self.loop.call_later(delay, self._read_timeout)

    def _disarm(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
        self.read_timer = None
        self.read_phase = None

    def _read_timeout(self) -> None:
        phase, self.read_timer, self.read_phase = self.read_phase, None, None
        if self.refused or self.transport.is_closing():
            return
        if phase == "header":
            self.close_connection("header_timeout", 408 if self.in_headers else None)
            return
        cycle = self.cycle
        if cycle is None or not cycle.more_body:
            return
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # The server holds this client back (its reading is paused, or the application
            # has not asked for the body yet): not the client's delay.
            self._arm("body", self.limits.body_timeout_s)
            return
        answer = None if cycle.response_started else 408
        cycle.disconnected = True  # the application's receive() now says http.disconnect
        cycle.message_event.set()
        self.close_connection("body_timeout", answer)

    def _refuse_headers(self) -> None:
        status = 414 if len(self.url) > self.limits.max_header_bytes else 431
        self.close_connection("header_too_large", status)

    def close_connection(self, reason: str, status: int | None = None) -> None:
        """Stop serving this connection, answering ``status`` first when given."""
        self.refused = True
        self._disarm()
        self.book.idle.pop(self, None)
        self.book.record(reason)
        transport = self.transport
        if transport.is_closing():
            return
        if status is None:
            transport.close()
            return
        transport.write(self._error_response(status))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, transport.close)

    def _error_response(self, status: int) -> bytes:
        body = orjson.dumps({"error": _REASON_PHRASES[status]})
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        return b"".join(content)


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, plus the bookkeeping of workers that died."""

    startup_failed = False

    def keep_subprocess_alive(self) -> None:
        before = list(self.processes)
        super().keep_subprocess_alive()
        for process in before:
            code = process.exitcode
            if code is None or process.pid is None:
                continue  # still running
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            if code == STARTUP_FAILURE:
                self.startup_failed = True
                log.error("worker %d failed to start (exit status %d)", process.pid, code)
            else:
                log.warning(
                    "worker %d ended (exit status %d); its live metrics were removed",
                    process.pid,
                    code,
                )


def run(config: uvicorn.Config) -> int:
    """Serve until a signal ends the server; the exit status: 0, or 3 when start-up failed."""
    if isinstance(config, GuardedConfig):
        limits = config.limits
        log.info(
            "per worker: at most %d connections, %d header bytes, headers within %g s, "
            "body within %g s, keep-alive %d s",
            limits.max_connections,
            limits.max_header_bytes,
            limits.header_timeout_s,
            limits.body_timeout_s,
            config.timeout_keep_alive,
        )
    if config.workers > 1:
        sock = config.bind_socket()
        supervisor = Supervisor(config, sockets=[sock])
        supervisor.run()
        return STARTUP_FAILURE if supervisor.startup_failed else 0
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits 3 itself when the lifespan start-up fails
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        pass
    return 0 if server.started else STARTUP_FAILURE
