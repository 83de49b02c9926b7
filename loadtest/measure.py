"""One server's measurements: its answer checked, then its loads, each in a fresh process.

A peer gets the two loads every server gets (256-row and 1-row requests); this service also
gets the v2 binary load, a profile of its worker and, in the first round, the latency row at
a fraction of its saturated rate; and, in a process of its own with the gRPC port open, the
same two loads over gRPC (``ModelInfer`` with raw contents, :mod:`loadtest.grpc_load`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from loadtest.agreement import service_numbers, worst_difference
from loadtest.grpc_load import run_grpc
from loadtest.payloads import Body, BodyName
from loadtest.profiler import start_profile
from loadtest.scenarios import (
    LATENCY_FRACTION,
    NATIVE_1,
    NATIVE_256,
    PEER_1,
    PEER_256,
    V2_256,
    Durations,
    Scenario,
    service_server,
)
from loadtest.servers import Server, free_port
from loadtest.wrk import Load, run_wrk


@dataclass(frozen=True)
class Run:
    """What every measurement of one benchmark run shares."""

    bodies: dict[BodyName, Body]
    #: this service's in-process answer for the 256 rows, by the peers' output names
    reference: dict[str, np.ndarray]
    durations: Durations
    #: ModelInfer messages (raw contents) by row count: the gRPC loads' requests
    grpc: dict[int, pb.ModelInferRequest]

    def load(
        self, server: Server, scenario: Scenario, seconds: float, delay_ms: float = 0.0
    ) -> Load:
        return run_wrk(server, scenario, self.bodies[scenario.body], seconds, delay_ms)

    def warm_and_load(self, server: Server, scenario: Scenario) -> Load:
        self.load(server, scenario, self.durations.warm)
        return self.load(server, scenario, self.durations.load)

    def answer(self, server: Server, scenario: Scenario) -> dict[str, Any]:
        """``server``'s JSON answer to one request of ``scenario``."""
        body = self.bodies[scenario.body]
        headers = {"content-type": body.content_type}
        answer: dict[str, Any] = json.loads(server.post(scenario.path, body.data, headers))
        return answer


@dataclass
class Row:
    """One server's line of the side-by-side table."""

    name: str
    big: Load
    small: Load
    rss_mb: float
    agreement: tuple[str, float] | None = None
    v2: Load | None = None
    latency: Load | None = None


def measure_peer(server: Server, run: Run) -> Row:
    with server:
        name, excess = worst_difference(run.answer(server, PEER_256), run.reference)
        if excess > 1.0:
            raise RuntimeError(f"{server.name}: {name} differs from this service's answer")
        big = run.warm_and_load(server, PEER_256)
        small = run.warm_and_load(server, PEER_1)
        row = Row(server.name, big, small, server.rss_mb(), agreement=(name, excess))
    print(f"{row.name}: {big.rows_per_s:,.0f} rows/s, 1-row {small.requests_per_s:,.0f}/s")
    return row


def measure_service(run: Run, profile_to: Path | None, latency_too: bool) -> Row:
    """This service with one worker; ``profile_to`` receives py-spy's raw stacks."""
    server = service_server(1)
    with server:
        answer = service_numbers(run.answer(server, NATIVE_256))
        agreement = worst_difference(answer, run.reference)
        big = _profiled_load(server, run, profile_to)
        small = run.warm_and_load(server, NATIVE_1)
        v2 = run.warm_and_load(server, V2_256)
        latency = at_fraction_of(server, run, big, LATENCY_FRACTION) if latency_too else None
        rss = server.rss_mb()
    row = Row(server.name, big, small, rss, agreement=agreement, v2=v2, latency=latency)
    print(
        f"{row.name}: {big.rows_per_s:,.0f} rows/s, 1-row {small.requests_per_s:,.0f}/s, "
        f"v2 {v2.rows_per_s:,.0f} rows/s",
        flush=True,
    )
    if latency is not None:
        print(f"p99 {latency.p99_ms:.1f} ms at {latency.rows_per_s / big.rows_per_s:.0%}")
    return row


def _profiled_load(server: Server, run: Run, profile_to: Path | None) -> Load:
    """The 256-row native load, py-spy on the busiest process of the tree during it."""
    run.load(server, NATIVE_256, run.durations.warm)
    spy = (
        None
        if profile_to is None
        else start_profile(server.busiest(), run.durations.profile, profile_to)
    )
    big = run.load(server, NATIVE_256, run.durations.load)
    if spy is not None:
        spy.wait()
    return big


def at_fraction_of(server: Server, run: Run, saturated: Load, fraction: float) -> Load:
    """256-row requests at ``fraction`` of the saturated rate: each connection pauses between
    requests; two short calibration runs correct the pause for the latency they see."""
    target = fraction * saturated.requests_per_s
    conns = NATIVE_256.connections
    delay = max(1000 * conns / target - saturated.p50_ms, 0.0)
    for _ in range(2):
        probe = run.load(server, NATIVE_256, run.durations.probe, delay)
        delay = max(delay + 1000 * conns / target - 1000 * conns / probe.requests_per_s, 0.0)
    return run.load(server, NATIVE_256, run.durations.load, delay)


def measure_workers(run: Run, workers: int) -> Load:
    with service_server(workers) as server:
        return run.warm_and_load(server, NATIVE_256)


GRPC_NAME = "this service, gRPC `ModelInfer` raw contents (Python `grpc.aio` client)"


def measure_grpc(run: Run) -> Row:
    """This service with one worker and its gRPC port open: the 256-row load at the HTTP
    load's connections and the 1-row load at its 64, from :mod:`loadtest.grpc_load` (a
    Python client, which takes more of the shared CPU than wrk does)."""
    grpc_port = free_port()
    server = service_server(1, grpc_port)
    with server:
        big = run_grpc(
            grpc_port, run.grpc[NATIVE_256.rows], NATIVE_256.connections, run.durations.load
        )
        small = run_grpc(
            grpc_port, run.grpc[NATIVE_1.rows], NATIVE_1.connections, run.durations.load
        )
        rss = server.rss_mb()
    row = Row(GRPC_NAME, big, small, rss)
    print(
        f"gRPC: {big.rows_per_s:,.0f} rows/s (p50 {big.p50_ms:.1f} ms, p99 {big.p99_ms:.1f} ms), "
        f"1-row {small.requests_per_s:,.0f}/s, errors {big.errors + small.errors}",
        flush=True,
    )
    return row
