"""The FastAPI application: routes, error handlers, and the model lifecycle in its lifespan.

Models are loaded and warmed up in the lifespan start-up, before uvicorn binds the port, so a
process that accepts connections is ready unless it is shutting down. On SIGTERM/SIGINT the
readiness flag drops at once (the handler uvicorn installs is wrapped, not replaced), while
uvicorn lets the requests in flight finish before the process exits.

The models served may change afterwards, as ``WATCHTIME_MODEL_CONTROL`` says
(:mod:`service.controlplane`: a poll of the repository, or load and unload requests on the
Open Inference Protocol's repository extension).

With ``WATCHTIME_GRPC_PORT`` (default 8001; 0: none) the lifespan also runs the Open Inference
Protocol's gRPC service on the same event loop, once the models are loaded, over the same data
plane (:mod:`service.protocol.grpc.server`); a shutdown drains it beside HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service import metrics
from service.auth import install_auth
from service.config import ENV_PREFIX, Settings, load_settings
from service.controlplane import ControlPlane
from service.dataplane import DataPlane
from service.errors import ConfigError
from service.protocol.common import SERVER_VERSION
from service.protocol.errors import install_error_handlers
from service.protocol.fastpath import FastPath
from service.protocol.native.endpoints import router as native_router
from service.protocol.schemas import request_examples, v2_examples
from service.protocol.v2.endpoints import router as v2_router
from service.protocol.v2.repository import router as repository_router
from service.protocol.web.pages import install_pages
from service.runtime.batcher import BatchConfig
from service.runtime.batchers import Batchers
from service.runtime.fill import FeatureLookup
from service.runtime.model import SessionConfig
from service.runtime.repository import ModelControl, ModelRepository
from service.runtime.state import ServiceState
from service.runtime.store import Lookup, load_embedded

if TYPE_CHECKING:
    from service.protocol.grpc.server import GrpcFront

log = logging.getLogger("watchtime.app")

PREDICT_PATHS = (
    "/v1/predict",
    "/v1/models/{name}/predict",
    "/v1/models/{name}/versions/{version}/predict",
)
INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")


def _chain_shutdown_signals(state: ServiceState) -> None:
    """Make SIGTERM/SIGINT drop readiness first, then do what the installed handler does."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            state.begin_shutdown()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                raise SystemExit(128 + signum)

        signal.signal(sig, handler)


def _control(settings: Settings, repository: ModelRepository | None = None) -> ModelControl:
    config = SessionConfig(settings.intra_op_threads, settings.inter_op_threads)
    return ModelControl(settings.model_repository, config, settings.warmup_rows, repository)


def _load(settings: Settings) -> ModelControl:
    """Start-up: the models the control mode loads first (all of them, or in explicit mode
    those of WATCHTIME_LOAD_MODELS), with the start-up rules of WATCHTIME_STRICT_MODELS.

    Only without model control must something serve, and the default model be loaded: in
    the other modes models may arrive later.
    """
    control = _control(settings)
    fixed = settings.model_control == "none"
    names = settings.load_model_names() if settings.model_control == "explicit" else None
    control.load_initial(names, strict=settings.strict_models, require_one=fixed)
    control.repository.set_default(settings.default_model, require_loaded=fixed)
    return control


def create_app(
    settings: Settings | None = None,
    repository: ModelRepository | None = None,
    *,
    handle_signals: bool = True,
) -> FastAPI:
    """The application; ``repository`` (tests) skips loading from ``settings.model_repository``.

    ``handle_signals=False`` leaves the process's signal handlers alone (an embedding host, or
    a test process, owns them).

    With no arguments (uvicorn's factory mode, used for every worker process) the settings
    come from the ``WATCHTIME_*`` environment, which ``python -m service`` fills from its
    command line.
    """
    settings = settings if settings is not None else load_settings()
    state = ServiceState(repository)
    batchers = Batchers(batch_config(settings))
    features = feature_lookup(settings)
    plane = DataPlane(state, settings, batchers, features)
    control_plane = ControlPlane(batchers, settings)
    if repository is not None:  # the repository extension answers even without a lifespan
        control_plane.attach(_control(settings, repository))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if handle_signals:
            _chain_shutdown_signals(state)
        control = control_plane.attached
        if control is None:
            control = await run_in_threadpool(_load, settings)
        loaded = control.repository
        metrics.register_models((m.name, m.version, m.manifest.family) for m in loaded)
        metrics.register_load_status(loaded.load_status())
        if features is not None:
            features.register_metrics()
        state.set_repository(loaded)
        control_plane.start(control)
        grpc_front = await _start_grpc(plane, settings) if settings.grpc_port else None
        app.state.grpc = grpc_front
        log.info(
            "ready: %d model(s), default %s, model control %s",
            len(loaded),
            loaded.default_name,
            settings.model_control,
        )
        try:
            yield
        finally:
            state.begin_shutdown()
            await control_plane.close()
            if grpc_front is not None:
                await grpc_front.stop()
            await batchers.close()
            if features is not None:
                await features.close()
            plane.close()
            metrics.process_exiting()

    app = FastAPI(
        title="watchtime",
        summary="Short-video watch time as a predictive distribution",
        description=(
            "Per candidate row: expected watch time, point prediction, spread, quick-skip "
            "probability, quantiles and interval masses, all in seconds."
        ),
        version=SERVER_VERSION,
        lifespan=lifespan,
        docs_url=None,  # served by install_pages from installed files, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = state
    app.state.data_plane = plane
    app.state.control_plane = control_plane
    install_error_handlers(app)
    app.add_middleware(FastPath, plane=plane)
    install_auth(app, settings)  # added last: outermost, so it guards the fast path too
    app.include_router(native_router)
    app.include_router(v2_router)
    app.include_router(repository_router)
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], tags=["health"])
    install_pages(app)
    _examples_from_default_model(app, state)
    return app


async def _start_grpc(plane: DataPlane, settings: Settings) -> GrpcFront:
    """The gRPC server beside HTTP, on this event loop, drained as soon as a shutdown begins
    (the signal handler only schedules that)."""
    from service.protocol.grpc.server import GrpcFront  # grpc only where it is served

    front = GrpcFront(plane, settings)
    await front.start()
    loop = asyncio.get_running_loop()

    def drain() -> None:
        loop.call_soon_threadsafe(front.begin_drain)

    plane.state.on_shutdown(drain)
    return front


def feature_lookup(settings: Settings) -> FeatureLookup | None:
    """The feature store of ``WATCHTIME_FEATURE_STORE`` (None for ``none``).

    The tables file is read in every mode: it is the embedded store, and it says which
    columns any store holds (Redis is checked against it). ConfigError when it is unreadable.
    """
    if settings.feature_store == "none":
        return None
    try:
        embedded = load_embedded(settings.feature_tables)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{ENV_PREFIX}FEATURE_TABLES: {exc}") from None
    store: Lookup = embedded
    if settings.feature_store != "embedded":
        from service.runtime.redis_store import RedisStore  # redis only where it is used

        store = RedisStore(
            settings.feature_store,
            embedded.schema,
            settings.feature_store_timeout_ms / 1000.0,
            settings.feature_store_max_connections,
        )
    return FeatureLookup(embedded.schema, store, settings.feature_store_required)


def batch_config(settings: Settings) -> BatchConfig:
    """The batchers' knobs from the settings."""
    return BatchConfig(
        enabled=settings.batching,
        max_batch_rows=settings.max_batch_rows,
        max_queue_delay_s=settings.max_queue_delay_ms / 1000.0,
        max_queue_rows=settings.max_queue_rows,
    )


async def metrics_endpoint() -> Response:
    """Prometheus text format: every worker process's values, merged."""
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


def _examples_from_default_model(app: FastAPI, state: ServiceState) -> None:
    """Fill the predict examples of ``/openapi.json`` with columns the default model reads."""
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = base_openapi()
        repository = state.repository
        if repository is None or getattr(app.state, "examples_filled", False):
            return schema
        model = repository.default()
        columns = model.example_columns(2, public=True)
        features = {name: col.tolist() for name, col in columns.items()}
        native = request_examples(features)
        for path in PREDICT_PATHS:
            body = schema["paths"][path]["post"]["requestBody"]
            body["content"]["application/json"]["examples"] = native
        v2 = v2_examples(features, model.source_kinds)
        for path in INFER_PATHS:
            body = schema["paths"][path]["post"]["requestBody"]
            body["content"]["application/json"]["examples"] = v2
        app.state.examples_filled = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
