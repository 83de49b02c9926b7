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
"""

from __future__ import annotations

import logging
import os

import uvicorn
from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

log = logging.getLogger("watchtime.server")


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
