"""Open Inference Protocol gRPC requests written by hand, for the tests that need messages no
client library writes (typed ``contents``, malformed raw contents, shape bombs).

The messages are Triton's client's (``tritonclient.grpc.service_pb2``): the same ``inference``
package, names and field numbers as the service's definition, so the same wire bytes. The
service's own generated module is never imported in a test process, which may hold
Triton's (one process cannot register both).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.support.v2 import datatype

OUTPUTS = ["expected_watch_time_s", "point_s", "std_s", "quick_skip_prob"]

__all__ = ["OUTPUTS", "Client", "pb", "raw_bytes", "request"]


def raw_bytes(values: np.ndarray) -> bytes:
    """One tensor's raw contents: little-endian elements, BYTES as length-prefixed UTF-8."""
    if values.dtype.kind == "O":
        texts = [str(v).encode() for v in values]
        return b"".join(struct.pack("<I", len(t)) + t for t in texts)
    return values.astype("<f8" if values.dtype.kind == "f" else "<i8").tobytes()


def _set(target: Any, name: str, value: Any) -> None:
    param = target[name]
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    else:
        param.string_param = str(value)


def request(
    columns: Mapping[str, np.ndarray],
    *,
    raw: bool = True,
    model: str = "egmn",
    parameters: Mapping[str, Any] | None = None,
    outputs: list[str] | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest over ``columns``: raw contents, or each input's typed contents."""
    message = pb.ModelInferRequest(model_name=model)
    for name, values in columns.items():
        tensor = message.inputs.add(name=name, datatype=datatype(values), shape=[len(values)])
        if raw:
            message.raw_input_contents.append(raw_bytes(values))
        elif values.dtype.kind == "O":
            tensor.contents.bytes_contents.extend(str(v).encode() for v in values)
        elif values.dtype.kind == "f":
            tensor.contents.fp64_contents.extend(values.tolist())
        else:
            tensor.contents.int64_contents.extend(values.tolist())
    for name, value in (parameters or {}).items():
        _set(message.parameters, name, value)
    for name in outputs or []:
        message.outputs.add(name=name)
    return message


def outputs_of(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Every output of an answer as FP64 arrays of their shapes, raw or typed."""
    out = {}
    for i, tensor in enumerate(response.outputs):
        assert tensor.datatype == "FP64"
        if response.raw_output_contents:
            flat = np.frombuffer(response.raw_output_contents[i], dtype="<f8")
        else:
            flat = np.asarray(tensor.contents.fp64_contents, dtype=np.float64)
        out[tensor.name] = flat.reshape(list(tensor.shape))
    return out


class Client:
    """A channel to the service's gRPC port and its GRPCInferenceService stub."""

    def __init__(self, port: int, max_send: int = 256 * 1024 * 1024) -> None:
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[
                ("grpc.max_send_message_length", max_send),
                ("grpc.max_receive_message_length", -1),
            ],
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def infer(
        self,
        message: pb.ModelInferRequest,
        timeout: float | None = 30.0,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> pb.ModelInferResponse:
        return self.stub.ModelInfer(message, timeout=timeout, metadata=metadata)

    def error(self, message: pb.ModelInferRequest, **kwargs: Any) -> grpc.RpcError:
        """The error the service answers ``message`` with (AssertionError when it answers)."""
        try:
            self.infer(message, **kwargs)
        except grpc.RpcError as exc:
            return exc
        raise AssertionError("the service answered instead of refusing")

    def health(self, service: str = "") -> int:
        """The standard health service's status for ``service`` (1 SERVING, 2 NOT_SERVING)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)

    def close(self) -> None:
        self.channel.close()
