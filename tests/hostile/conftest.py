"""The shared target of the hostile suite: one real service with short, test-sized limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostile_support import ServiceProcess, scaled

#: Limits of the shared server, small so that each attack resolves within seconds.
MAX_CONNECTIONS = scaled(48, 1024)
HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 2


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    svc = ServiceProcess(
        env={
            "WATCHTIME_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "WATCHTIME_TIMEOUT_REQUEST_HEADER_S": str(HEADER_TIMEOUT_S),
            "WATCHTIME_TIMEOUT_REQUEST_BODY_S": str(BODY_TIMEOUT_S),
            "WATCHTIME_TIMEOUT_KEEP_ALIVE_S": str(KEEP_ALIVE_S),
        }
    )
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()
