"""Helpers that tests call with arguments, imported by package path
(``from tests.support.api import request_rows``). Shared state (repositories, clients,
servers, tool runners) is made by fixtures, in the ``conftest.py`` of the narrowest
directory whose tests all use it."""

from __future__ import annotations

import socket
from pathlib import Path

#: The repository root: the tests read its models, deploy files, README and Makefile.
ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
DEPLOY = ROOT / "deploy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
