"""The Open Inference Protocol's ``inference.GRPCInferenceService`` and the standard gRPC health
service, on a ``grpc.aio`` server in the same event loop as uvicorn.

The app's lifespan starts it once the models are loaded (:class:`GrpcFront`) and stops it on
shutdown; every RPC goes through the same data plane as the HTTP routes: the same model
resolution, admission, batcher, deadlines, limits and metrics (``endpoint="grpc"``).

- Limits: a message over ``WATCHTIME_MAX_BODY_BYTES`` is refused by gRPC itself
  (RESOURCE_EXHAUSTED) before it is read whole; the bytes of a message being served are held
  against the worker's body budget, as HTTP bodies are; the row limit is the v2 routes'. At
  most ``WATCHTIME_MAX_CONNECTIONS`` RPCs run at once per worker (gRPC answers
  RESOURCE_EXHAUSTED past it).
- Deadlines: the gRPC deadline is the request's deadline (with the ``timeout`` parameter
  and ``WATCHTIME_DEFAULT_TIMEOUT_MS``, the tightest wins); past it while queued,
  DEADLINE_EXCEEDED. A client that cancels, or whose deadline passes while its rows run,
  gets its RPC cancelled by gRPC; its rows not yet started are dropped (status 499 or 504
  in the metrics).
- Health: ``grpc.health.v1.Health`` answers SERVING for the server (``""``) and for
  ``inference.GRPCInferenceService`` while the models are loaded and no shutdown has begun
  (Kubernetes' native gRPC probes), NOT_SERVING from the moment SIGTERM arrives.
- Authentication: with ``WATCHTIME_API_KEYS``, every RPC but the probes (health,
  ServerLive, ServerReady) needs metadata ``authorization: Bearer <key>``, else
  UNAUTHENTICATED.
- Workers: each uvicorn worker runs its own gRPC server on the same port with
  ``SO_REUSEPORT``, and the kernel spreads new connections among them. A gRPC connection
  is long-lived (HTTP/2), so the spreading is per connection, not per RPC: a client with
  one channel talks to one worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.auth import bearer_token, tokens_match
from service.config import Settings
from service.dataplane import DataPlane
from service.errors import BodyBudgetSpent, InvalidInput, ServiceError, Unauthorized
from service.protocol.common import SERVER_VERSION
from service.protocol.errors import CLIENT_GONE_STATUS, as_service_error
from service.protocol.grpc import grpc_predict_v2_pb2 as pb
from service.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from service.protocol.grpc.codec import decode_infer, encode_infer, wants_raw
from service.protocol.grpc.status import grpc_status, metrics_status, trailing_metadata
from service.protocol.http import BUDGET_RETRY_AFTER_S
from service.protocol.v2.codec import metadata_document

log = logging.getLogger("watchtime.grpc")

SERVICE_NAME = "inference.GRPCInferenceService"
DRAIN_S = 30.0
"""After SIGTERM, how long RPCs in flight may take to finish (as uvicorn's HTTP drain)."""

OPEN_METHODS = frozenset(
    {
        f"/{SERVICE_NAME}/ServerLive",
        f"/{SERVICE_NAME}/ServerReady",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    }
)
"""The probes: answered without a token, as the HTTP probes are."""


async def _abort(context: grpc.aio.ServicerContext[Any, Any], err: ServiceError) -> None:
    await context.abort(grpc_status(err), err.message, trailing_metadata(err))


class Malformed:
    """What a request's bytes become when they are no message of the method's type."""

    def __init__(self, kind: str) -> None:
        self.error = InvalidInput(f"the request is not a valid {kind} message")


def _lenient(kind: Any) -> Callable[[bytes], Any]:
    """A request deserializer that turns bytes which do not parse into :class:`Malformed`,
    answered INVALID_ARGUMENT (gRPC answers INTERNAL for a deserializer that raises)."""

    def parse(data: bytes) -> Any:
        try:
            return kind.FromString(data)
        except DecodeError:
            return Malformed(kind.__name__)

    return parse


async def _check(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if isinstance(request, Malformed):
        await _abort(context, request.error)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over the data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        await _check(request, context)
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        await _check(request, context)
        return pb.ServerReadyResponse(ready=self.plane.state.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        await _check(request, context)
        try:
            self.plane.model(request.name, request.version or None)
        except Exception as exc:
            await _abort(context, as_service_error(exc, "name"))
        return pb.ModelReadyResponse(ready=self.plane.state.ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        await _check(request, context)
        return pb.ServerMetadataResponse(name="watchtime", version=SERVER_VERSION)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        await _check(request, context)
        try:
            model = self.plane.model(request.name, request.version or None)
            doc = metadata_document(model, self.plane.repository.versions(model.name))
        except Exception as exc:
            await _abort(context, as_service_error(exc, "name"))
            raise  # not reached: abort raises
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[tensor(**t) for t in doc["inputs"]],
            outputs=[tensor(**t) for t in doc["outputs"]],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        plane = self.plane
        arrival = time.monotonic()
        deadline: float | None = None
        held = 0
        failure: ServiceError | None = None
        with plane.observe("grpc") as record:
            try:
                if isinstance(request, Malformed):
                    raise request.error
                model = plane.model(request.model_name, request.model_version or None)
                record.model = model.name
                size = request.ByteSize()
                budget = plane.body_budget
                if not budget.take(size):
                    raise BodyBudgetSpent(budget.held, budget.limit, BUDGET_RETRY_AFTER_S)
                held = size
                settings = plane.settings
                decoded = await plane.decode(
                    decode_infer,
                    model,
                    request,
                    settings.max_request_rows,
                    plane.admission(model),
                    plane.fillable(model),
                    size=size,
                )
                deadline = plane.deadline(arrival, context.time_remaining(), decoded.timeout_s)
                result = await plane.infer(
                    model, decoded.columns, decoded.n, decoded.options, deadline
                )
                response = encode_infer(model, decoded, result, wants_raw(request, decoded))
                record.status = 200
                return response
            except asyncio.CancelledError:  # the client cancelled, or its deadline passed
                late = deadline is not None and time.monotonic() >= deadline
                record.status = 504 if late else CLIENT_GONE_STATUS
                raise
            except Exception as exc:  # every failure becomes the protocol's status
                failure = as_service_error(exc, "inputs")
                record.status = metrics_status(failure)
            finally:
                if held:
                    plane.body_budget.give(held)
        await _abort(context, failure)
        raise AssertionError("not reached: abort raises")


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for an RPC without ``authorization: Bearer <key>`` (probes excepted)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = [key.encode("ascii") for key in keys]

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler_call_details.method in OPEN_METHODS:
            return await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        headers = [
            (str(k).encode("latin-1"), v if isinstance(v, bytes) else str(v).encode("latin-1"))
            for k, v in metadata
        ]
        token = bearer_token(headers)
        if token is not None and tokens_match(token, self.keys):
            return await continuation(handler_call_details)
        given = token is not None
        message = "invalid bearer token" if given else "a valid bearer token is required"
        return _refusal(Unauthorized(f"{message} (metadata 'authorization: Bearer <key>')"))


def _refusal(err: ServiceError) -> grpc.RpcMethodHandler[Any, Any]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await _abort(context, err)

    return grpc.unary_unary_rpc_method_handler(refuse)


METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}
"""The service's methods: request and response message types."""


def inference_handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """The service's handlers as the generated ``add_..._to_server`` makes them, but with
    :func:`_lenient` deserializers, so that bytes which do not parse are a client's fault."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=_lenient(request),
            response_serializer=lambda message: message.SerializeToString(),
        )
        for name, (request, response) in METHODS.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcFront:
    """The gRPC server of one worker process: started, drained and stopped by the lifespan."""

    def __init__(self, plane: DataPlane, settings: Settings) -> None:
        self.plane = plane
        self.settings = settings
        # the asyncio health servicer (its stubs know only the threaded one)
        self.health: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        keys = settings.api_key_list()
        options = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            # several workers share the port; one alone keeps a taken port an error
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
        server = grpc.aio.server(
            interceptors=[BearerAuthInterceptor(keys)] if keys else None,
            options=options,
            maximum_concurrent_rpcs=settings.max_connections,
        )
        server.add_generic_rpc_handlers((inference_handlers(InferenceServicer(self.plane)),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = bind_address(settings.host, settings.grpc_port)
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"gRPC cannot listen on {address}: {exc}") from None
        await server.start()
        self.server = server
        await self.set_serving(self.plane.state.ready)
        log.info("gRPC listening on %s", bind_address(settings.host, self.port))

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    def begin_drain(self) -> None:
        """On the event loop, once a shutdown begins: NOT_SERVING, no new RPCs, a drain."""
        if self._stopping is None and self.server is not None:
            self._stopping = asyncio.ensure_future(self._drain(self.server))

    async def _drain(self, server: grpc.aio.Server) -> None:
        await self.set_serving(False)
        await server.stop(DRAIN_S)

    async def stop(self) -> None:
        """Drain (if not already under way) and wait until the server has stopped."""
        self.begin_drain()
        if self._stopping is not None:
            await self._stopping
