"""Fixtures shared by the test directories: the shipped model repository."""

from __future__ import annotations

import os

import pytest

from service.runtime.model import SessionConfig
from service.runtime.repository import ModelRepository, load_repository
from tests.support import MODELS

# No gRPC server unless a test asks for one on a port of its own: the default port (8001) may
# be taken on a shared machine, and the apps and `python -m service` children the tests start
# (which inherit this environment) would all try to bind it.
os.environ["WATCHTIME_GRPC_PORT"] = "0"


@pytest.fixture(scope="module")
def repository() -> ModelRepository:
    """The shipped models, loaded once per test module (one onnxruntime thread each)."""
    return load_repository(MODELS, SessionConfig(intra_op_threads=1), warmup_rows=8)
