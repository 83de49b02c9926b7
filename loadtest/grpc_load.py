"""A gRPC load on the service's ``ModelInfer``: ``connections`` calls in flight, back to back,
each on a channel of its own, for ``seconds``; read back as a :class:`~loadtest.wrk.Load`.

The messages are built once from the held-out rows (raw contents, the fast path) with
Triton's client's message classes, which share the service's wire format. The generator is
Python (``grpc.aio``), not C like wrk: on a small machine it takes CPU from the server, so
compare its figures with an HTTP load from the same kind of client before reading the ratio
as the protocols' own. ``python -m loadtest.grpc_load --port 8001`` runs the 256-row and the
1-row loads against a running service.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from loadtest.payloads import HeldOutRows, manifest_sources
from loadtest.scenarios import MODEL, MODEL_DIR
from loadtest.wrk import Load

__all__ = ["infer_message", "run_grpc"]


def infer_message(rows: HeldOutRows, count: int) -> pb.ModelInferRequest:
    """A ModelInferRequest over the first ``count`` held rows, in raw contents, asking for
    the quantiles and intervals the HTTP bodies ask for."""
    message = pb.ModelInferRequest(model_name=MODEL)
    for name, (datatype, values) in rows.tensors.items():
        part = values[:count]
        message.inputs.add(name=name, datatype=datatype, shape=[len(part)])
        if datatype == "BYTES":
            texts = [str(v).encode() for v in part]
            blob = b"".join(struct.pack("<I", len(t)) + t for t in texts)
        else:
            blob = part.astype("<f8" if datatype == "FP64" else "<i8").tobytes()
        message.raw_input_contents.append(blob)
    message.parameters["quantiles"].string_param = "0.1,0.5,0.9"
    message.parameters["intervals"].string_param = "[[0,3],[3,10],[10,null]]"
    return message


async def _load(port: int, message: pb.ModelInferRequest, connections: int, seconds: float) -> Load:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def worker(channel: grpc.aio.Channel) -> None:
        nonlocal errors
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                await stub.ModelInfer(message, timeout=10)
            except grpc.RpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    began = time.monotonic()
    try:
        await asyncio.gather(*(worker(c) for c in channels))
    finally:
        for channel in channels:
            await channel.close()
    took = time.monotonic() - began
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return Load(
        requests=len(latencies),
        seconds=took,
        rows=int(message.inputs[0].shape[0]),
        errors=errors,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        server_cpu=0.0,
    )


def run_grpc(port: int, message: pb.ModelInferRequest, connections: int, seconds: float) -> Load:
    """The load, after a warm-up of a tenth of its time."""
    asyncio.run(_load(port, message, connections, max(0.5, seconds / 10)))
    return asyncio.run(_load(port, message, connections, seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.grpc_load", description=__doc__)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    sources, kinds = manifest_sources(MODEL_DIR)
    rows = HeldOutRows(sources, kinds, 256)
    for count, connections in ((256, 8), (1, 64)):
        load = run_grpc(args.port, infer_message(rows, count), connections, args.seconds)
        print(
            f"gRPC {count}-row, {connections} in flight: {load.rows_per_s:,.0f} rows/s, "
            f"{load.requests_per_s:,.0f} requests/s, p50 {load.p50_ms:.1f} ms, "
            f"p99 {load.p99_ms:.1f} ms, errors {load.errors}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
