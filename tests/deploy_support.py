"""Locating the real linters and validators the operations tests drive.

The Python ones come with the ``dev`` extra, so a missing one is an installation error. The
distribution's ``promtool`` and ``prometheus`` are installed by ``make system-deps``; without
them the tests skip on a developer's machine and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent


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
