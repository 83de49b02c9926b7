"""``python -m service``: validate the configuration, then run uvicorn.

Options ``--host --port --workers --model-repository`` override the ``WATCHTIME_*``
variables. The validated settings are exported back to the environment, because with
``--workers > 1`` uvicorn builds the app in fresh processes through the factory, which reads
only the environment. Metrics always run in prometheus-client's multiprocess mode, in a
fresh directory (``PROMETHEUS_MULTIPROC_DIR``), so one code path serves any worker count.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from uvicorn.config import LOGGING_CONFIG

from service.config import Settings, parse_cli, settings_env
from service.errors import ConfigError


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging set-up plus the service's own loggers on the same handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["watchtime"] = {
        "handlers": ["default"],
        "level": settings.log_level.upper(),
        "propagate": False,
    }
    return config


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_directory() -> tuple[str, bool]:
    """An empty directory for the workers' metric files, and whether it was created here.

    prometheus-client reads the variable when it is imported, so it is set before any worker
    imports it. Files left by an earlier run would add their counts to this one's, so a
    directory given by the operator is emptied; otherwise a private one is made.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for entry in os.listdir(given):
            if entry.endswith(".db"):
                os.remove(os.path.join(given, entry))
        return given, False
    return tempfile.mkdtemp(prefix="watchtime-metrics-"), True


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_cli(argv)
    except ConfigError as exc:
        print(f"watchtime: configuration error: {exc}", file=sys.stderr)
        return 2
    default = settings.default_model
    if default is not None and not (settings.model_repository / default).is_dir():
        print(
            f"watchtime: configuration error: WATCHTIME_DEFAULT_MODEL={default!r}: no such "
            f"model under {settings.model_repository}",
            file=sys.stderr,
        )
        return 2
    os.environ.update(settings_env(settings))
    directory, owned = metrics_directory()
    os.environ[MULTIPROC_ENV] = directory
    # Only now: prometheus-client picks its multiprocess storage when a metric is created,
    # and the server module creates the metrics (with one worker, this very process serves).
    from service import server
    from service.runtime.repository import discover  # it imports the metrics: only now

    try:
        if settings.model_control == "none" and not discover(settings.model_repository):
            print(
                f"watchtime: configuration error: no <name>/<version>/ model directory under "
                f"{settings.model_repository}",
                file=sys.stderr,
            )
            return 2
        fd_error = server.fd_budget_error(settings.max_connections)
        if fd_error is not None:
            print(f"watchtime: configuration error: {fd_error}", file=sys.stderr)
            return 2
        status = serve(settings)
    finally:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
    if status:
        print(f"watchtime: start-up failed (exit status {status})", file=sys.stderr)
    return status


def serve(settings: Settings) -> int:
    """Run uvicorn until it exits (after a signal and the drain); non-zero: start-up failed."""
    from service import server  # after PROMETHEUS_MULTIPROC_DIR is set (see main)

    config = server.GuardedConfig(
        "service.app:create_app",
        limits=server.ConnectionLimits.from_settings(settings),
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=log_config(settings),
        loop="uvloop",
        http=server.GuardedHttpToolsProtocol,
        timeout_keep_alive=settings.timeout_keep_alive_s,
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    return server.run(config)


if __name__ == "__main__":
    raise SystemExit(main())
