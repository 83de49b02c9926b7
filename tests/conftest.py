"""Fixtures shared by the test directories: the shipped model repository."""

from __future__ import annotations

import pytest

from service.runtime.model import SessionConfig
from service.runtime.repository import ModelRepository, load_repository
from tests.support import MODELS


@pytest.fixture(scope="module")
def repository() -> ModelRepository:
    """The shipped models, loaded once per test module (one onnxruntime thread each)."""
    return load_repository(MODELS, SessionConfig(intra_op_threads=1), warmup_rows=8)
