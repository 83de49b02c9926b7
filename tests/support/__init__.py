"""Helpers that tests call with arguments, imported by package path
(``from tests.support.api import request_rows``). Shared state (repositories, clients,
servers, tool runners) is made by fixtures, in the ``conftest.py`` of the narrowest
directory whose tests all use it."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

#: The repository root: the tests read its models, deploy files, README and Makefile.
ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
DEPLOY = ROOT / "deploy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready_status(url: str) -> int:
    """The status of ``GET url``, or 0 while nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status)
    except OSError as exc:
        return int(getattr(exc, "code", 0))


def wait_until_ready(
    proc: subprocess.Popen[bytes],
    port: int,
    timeout: float,
    output: Callable[[], str],
    poll_s: float = 0.1,
) -> None:
    """Until a service child answers ``/readyz`` with 200; AssertionError, with the child's
    ``output()``, if it exits first or is not ready within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"service exited early:\n{output()}")
        if ready_status(f"http://127.0.0.1:{port}/readyz") == 200:
            return
        time.sleep(poll_s)
    raise AssertionError(f"service not ready after {timeout} s:\n{output()}")
