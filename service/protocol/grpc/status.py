"""Errors as gRPC statuses: the gRPC table beside the HTTP ones of :mod:`service.protocol.errors`.

Every ``ServiceError`` code has one gRPC status code here (``tests/protocol/test_error_tables.py``
fails for a code without one), and the message is the one the HTTP routes answer. Client
faults are never INTERNAL:

- invalid input, and a request over the row limit: INVALID_ARGUMENT (the same request can
  never succeed; gRPC itself answers RESOURCE_EXHAUSTED for a message over the size limit);
- an unknown model: NOT_FOUND;
- a full queue: RESOURCE_EXHAUSTED, with the ``retry-after`` seconds in the trailing metadata;
- the worker's budget of held request bytes spent, models not loaded (or a shutdown under
  way), and a feature store that is required but does not answer: UNAVAILABLE, which gRPC
  clients may retry on another server;
- a deadline passed while queued: DEADLINE_EXCEEDED;
- no or a wrong bearer token: UNAUTHENTICATED.

Importing this module does not import the generated protocol code (``grpc_predict_v2_pb2``):
its messages share the ``inference`` package with the clients' own copies (Triton's, KServe's),
and one process cannot register both.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from service.errors import FrameworkError, ServiceError
from service.protocol.errors import CLIENT_GONE_STATUS, V2

_INVALID = grpc.StatusCode.INVALID_ARGUMENT

GRPC_STATUS: Mapping[str, grpc.StatusCode] = {
    "invalid_input": _INVALID,
    "malformed_json": _INVALID,
    "too_long": _INVALID,
    "too_large": _INVALID,
    "unsupported_encoding": _INVALID,
    "unauthorized": grpc.StatusCode.UNAUTHENTICATED,
    "unknown_model": grpc.StatusCode.NOT_FOUND,
    "model_control_disabled": _INVALID,
    "queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "body_budget_full": grpc.StatusCode.UNAVAILABLE,
    "not_ready": grpc.StatusCode.UNAVAILABLE,
    "feature_store_unavailable": grpc.StatusCode.UNAVAILABLE,
    "deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
    "client_gone": grpc.StatusCode.CANCELLED,
    "internal": grpc.StatusCode.INTERNAL,
}
"""ServiceError code -> gRPC status code."""


def grpc_status(err: ServiceError) -> grpc.StatusCode:
    """The gRPC status code of an error (INTERNAL for a code the table does not know)."""
    if isinstance(err, FrameworkError):  # raised by the HTTP framework only
        return _INVALID if 400 <= err.status < 500 else grpc.StatusCode.INTERNAL
    return GRPC_STATUS.get(err.code, grpc.StatusCode.INTERNAL)


def metrics_status(err: ServiceError) -> int:
    """The ``status`` label of a gRPC request's metrics: the HTTP status the same error has on
    the v2 routes, so that dashboards and alerts (5xx ratio, 429s) read both protocols alike."""
    if err.code == "client_gone":
        return CLIENT_GONE_STATUS
    return V2.status(err)


def trailing_metadata(err: ServiceError) -> tuple[tuple[str, str], ...]:
    """The error's response headers as gRPC trailing metadata (``retry-after``)."""
    return tuple((name.lower(), value) for name, value in err.headers.items())
