"""``python -m service``: validate the configuration, then run uvicorn.

Options ``--host --port --workers --model-repository`` override the ``WATCHTIME_*``
variables. The validated settings are exported back to the environment, because with
``--workers > 1`` uvicorn builds the app in fresh processes through the factory, which reads
only the environment.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from service.config import ConfigError, Settings, parse_cli, settings_env
from service.runtime.repository import discover


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's logging set-up plus the service's own loggers on the same handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["watchtime"] = {
        "handlers": ["default"],
        "level": settings.log_level.upper(),
        "propagate": False,
    }
    return config


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_cli(argv)
    except ConfigError as exc:
        print(f"watchtime: configuration error: {exc}", file=sys.stderr)
        return 2
    if not discover(settings.model_repository):
        print(
            f"watchtime: configuration error: no <name>/<version>/ model directory under "
            f"{settings.model_repository}",
            file=sys.stderr,
        )
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
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=log_config(settings),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
