"""A real ``redis-server`` (Debian's package, installed by ``make system-deps``) on a free
loopback port, without persistence, stopped by its own pid.

``make test`` sets ``WATCHTIME_REQUIRE_REDIS=1``: there a missing ``redis-server`` fails the
tests that need it; elsewhere they skip.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loadtest.lookup import RedisProcess, RedisUnavailable
from loadtest.lookup import redis_server_binary as find_redis_server
from tests.support import ROOT

REQUIRED = os.environ.get("WATCHTIME_REQUIRE_REDIS") == "1"
TABLES = ROOT / "feature_store" / "kuairand.npz"


def redis_server_binary() -> str:
    """``redis-server``; fails (``WATCHTIME_REQUIRE_REDIS=1``) or skips without one."""
    found = find_redis_server()
    if found is None:
        message = "redis-server is missing: run `make system-deps` (Debian's redis-server)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return found


class RedisServer:
    """``redis-server`` on ``127.0.0.1:<free port>``, started as ``make bench`` starts it
    (:class:`loadtest.lookup.RedisProcess`); ``stop()`` ends it by its pid."""

    def __init__(self) -> None:
        self._process = RedisProcess(redis_server_binary())
        self.port, self.url = self._process.port, self._process.url
        try:
            self._process.__enter__()
        except RedisUnavailable as exc:
            raise AssertionError(str(exc)) from None

    def stop(self) -> None:
        self._process.__exit__(None, None, None)


def publish(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m model_export publish-features --to url`` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "model_export", "publish-features", "--to", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
