"""Fixtures of the protocol tests: the independent reference, a real uvicorn server, and a
whole service process with its gRPC port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.app import create_app
from service.config import Settings
from service.runtime.repository import ModelRepository
from tests.support import MODELS
from tests.support.api import LiveServer, Reference
from tests.support.hostile import ServiceProcess


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


@pytest.fixture(scope="module")
def live(repository: ModelRepository) -> Iterator[LiveServer]:
    """The app served by uvicorn on a local port, for clients that need a real socket."""
    app = create_app(Settings(model_repository=MODELS), repository, handle_signals=False)
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def grpc_service() -> Iterator[ServiceProcess]:
    """``python -m service`` with gRPC on, one per test module that asks."""
    svc = ServiceProcess(grpc=True)
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()
