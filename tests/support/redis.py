"""A real ``redis-server`` (Debian's package, installed by ``make system-deps``) on a free
loopback port, without persistence, stopped by its own pid.

``make test`` sets ``WATCHTIME_REQUIRE_REDIS=1``: there a missing ``redis-server`` fails the
tests that need it; elsewhere they skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import ROOT, free_port

REQUIRED = os.environ.get("WATCHTIME_REQUIRE_REDIS") == "1"
TABLES = ROOT / "feature_store" / "kuairand.npz"


def redis_server_binary() -> str:
    """``redis-server``; fails (``WATCHTIME_REQUIRE_REDIS=1``) or skips without one."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        message = "redis-server is missing: run `make system-deps` (Debian's redis-server)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return found


class RedisServer:
    """``redis-server`` on ``127.0.0.1:<free port>``; ``stop()`` ends it by its pid."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="redis-test-")
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError("redis-server exited at start-up") from None
                time.sleep(0.05)
        self.stop()
        raise AssertionError("redis-server did not listen within 10 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def publish(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m model_export publish-features --to url`` as an operator runs it."""
    import sys

    return subprocess.run(
        [sys.executable, "-m", "model_export", "publish-features", "--to", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
