"""Shared pieces of the HTTP tests: real rows of the test day, an in-process client, and an
independent reference that scores rows with its own onnxruntime session."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pandas as pd
from fastapi import FastAPI

from model_export.data import load_joined, raw_columns, split_by_day
from service.app import create_app
from service.config import Settings
from service.distributions import Distribution, get_family
from service.manifest import Manifest
from service.runtime.features import encode_features
from service.runtime.repository import ModelRepository
from service.versions import version_dirs
from tests.support import MODELS

# Every shipped EGMN version, oldest first; a bare name serves the highest (the service's
# rule), so the default model's reference is the last one.
EGMN_VERSIONS = [p.name for p in version_dirs(MODELS / "egmn")]
SERVED_VERSION = EGMN_VERSIONS[-1]
SHIPPED = MODELS / "egmn" / SERVED_VERSION


@functools.cache
def held_out_day() -> pd.DataFrame:
    """The held-out test day of the shipped data: rows a ranking client would really send."""
    return split_by_day(load_joined()).test


@functools.cache
def manifest() -> Manifest:
    return Manifest.read(SHIPPED / "manifest.json")


def json_columns(rows: pd.DataFrame, sources: list[str]) -> dict[str, list[Any]]:
    """Columns as JSON carries them: plain ints/floats/strings, null for a missing value."""
    out: dict[str, list[Any]] = {}
    for name in sources:
        col = rows[name]
        values = col.astype(object).to_numpy()
        missing = pd.isna(values)
        out[name] = [
            None if m else (v.item() if hasattr(v, "item") else v)
            for v, m in zip(values, missing, strict=True)
        ]
    return out


def request_rows(n: int, start: int = 0) -> tuple[dict[str, list[Any]], dict[str, np.ndarray]]:
    """``n`` test-day rows as JSON columns and as the numpy columns training used."""
    rows = held_out_day().iloc[start : start + n]
    sources = manifest().source_columns()
    return json_columns(rows, sources), raw_columns(rows, sources)


class Reference:
    """The shipped model scored without the service: its own session, then the family class."""

    def __init__(self, model_dir: Path = SHIPPED) -> None:
        self.manifest = Manifest.read(model_dir / "manifest.json")
        self.session = ort.InferenceSession(
            str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def distribution(self, columns: Mapping[str, np.ndarray]) -> Distribution:
        tensors = encode_features(self.manifest, columns)
        names = list(self.manifest.outputs.values())
        outs = self.session.run(names, tensors)
        params = {
            p: np.asarray(o, dtype=np.float64)
            for p, o in zip(self.manifest.outputs, outs, strict=True)
        }
        return get_family(self.manifest.family).from_params(params)

    def point(self, dist: Distribution) -> np.ndarray:
        """``point_s`` as the manifest defines it: the family's point, or, for a median
        point, the 0.5 quantile found by plain bisection of the CDF (none of the service's
        quantile search, nor its point rule)."""
        if self.manifest.point == "model":
            return dist.point()
        return bisect_median(dist)


def bisect_median(dist: Distribution, steps: int = 80) -> np.ndarray:
    """The smallest t with CDF(t) >= 0.5 per row, to float precision, by bisection."""
    lo = np.zeros(dist.n)
    hi = np.full(dist.n, 1.0)
    while True:  # widen until every row's CDF passes 0.5
        short = dist.cdf(hi[:, None])[:, 0] < 0.5
        if not short.any():
            break
        hi = np.where(short, hi * 2.0, hi)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        above = dist.cdf(mid[:, None])[:, 0] >= 0.5
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return hi


class AppClient:
    """Synchronous calls into an ASGI app through httpx, with the app's lifespan entered.

    One event loop lives as long as the client, so the lifespan context (entered once) and
    every request share it, as they would under uvicorn.
    """

    def __init__(self, app: FastAPI, lifespan: bool = True) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._lifespan: AbstractAsyncContextManager[None] | None = None
        if lifespan:
            self._lifespan = app.router.lifespan_context(app)
            self.loop.run_until_complete(self._lifespan.__aenter__())
        transport = httpx.ASGITransport(app=app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://test")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def gather(self, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
        """Several requests concurrently on the one loop."""

        async def run() -> list[httpx.Response]:
            return list(
                await asyncio.gather(*(self.client.request(m, u, **kw) for m, u, kw in calls))
            )

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        if self._lifespan is not None:
            self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.close()


def client_for(app: FastAPI, lifespan: bool = True) -> Iterator[AppClient]:
    """Fixture body: a client for ``app``, closed (lifespan exited) afterwards."""
    client = AppClient(app, lifespan)
    try:
        yield client
    finally:
        client.close()


async def chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    """A body without Content-Length (chunked), to test limits on streamed uploads."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


class LiveServer:
    """uvicorn serving ``app`` on a free local port from a background thread.

    For clients that need a real socket (the Triton client speaks HTTP through gevent).
    """

    def __init__(self, app: FastAPI) -> None:
        import socket
        import threading
        import time

        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def app_client(repository: ModelRepository, **knobs: Any) -> Iterator[AppClient]:
    """A client of the real app over ``repository`` with settings ``knobs``."""
    settings = Settings(model_repository=MODELS, **knobs)
    yield from client_for(create_app(settings, repository, handle_signals=False))
