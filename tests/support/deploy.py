"""Locating the real linters and validators the operations tests drive, and running
``python -m service`` as a process.

The Python ones come with the ``dev`` extra, so a missing one is an installation error. The
distribution's ``promtool`` and ``prometheus`` are installed by ``make system-deps``; without
them the tests skip on a developer's machine and fail under ``CI=true``.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import MODELS, ROOT, free_port, wait_until_ready

VENV_BIN = Path(sys.executable).parent

#: The ``promtool`` fixture: runs promtool with arguments, output captured as text.
Promtool = Callable[..., subprocess.CompletedProcess[str]]


def venv_tool(name: str) -> str:
    """A console script of the dev extra, next to this interpreter or on PATH."""
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is missing: install the dev extra (pip install -e '.[dev]')")
    return found


def system_tool(name: str) -> str:
    """A binary of the distribution's ``prometheus`` package (``make system-deps``)."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if found is None:
        message = f"{name} is missing: run `make system-deps` (Debian's prometheus package)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


class ServiceProcess:
    """``python -m service`` on a free port, as the image runs it, stopped with SIGTERM."""

    def __init__(self, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "WATCHTIME_HOST": "127.0.0.1",
            "WATCHTIME_PORT": str(self.port),
            "WATCHTIME_WORKERS": str(workers),
            "WATCHTIME_INTRA_OP_THREADS": "1",
            "WATCHTIME_MODEL_REPOSITORY": str(MODELS),
            "WATCHTIME_DEFAULT_MODEL": "egmn",
            "WATCHTIME_LOG_LEVEL": "warning",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        wait_until_ready(self.proc, self.port, timeout, self.stop)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.decode(errors="replace")


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``path`` from a local port: the status and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Service:
    """A ``python -m service`` child process with its output captured for diagnosis."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--model-repository", str(MODELS), *args]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "WATCHTIME_INTRA_OP_THREADS": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = b""

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until_ready(self.proc, self.port, timeout, self.finish)

    def finish(self, timeout: float = 60.0) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        self.output += out
        return self.output.decode(errors="replace")
