"""Fixtures of the operations tests: a real ``python -m service`` and ``promtool``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support import ROOT
from tests.support.deploy import Promtool, ServiceProcess, system_tool


@pytest.fixture(scope="module")
def service_process() -> Iterator[ServiceProcess]:
    """``python -m service`` with one worker on a free port, for the module's tests."""
    process = ServiceProcess(workers=1)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def promtool() -> Promtool:
    """Runs the distribution's ``promtool`` with arguments, its output captured as text."""
    path = system_tool("promtool")

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [path, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )

    return run
