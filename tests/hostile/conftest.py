"""The shared target of the hostile suite: one real service with short, test-sized limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.hostile import (
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    KEEP_ALIVE_S,
    MAX_CONNECTIONS,
    ServiceProcess,
)


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
