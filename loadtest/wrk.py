"""One ``wrk`` run against a server, read back as a :class:`Load`.

wrk's own summary is for people; ``bench.lua`` (a data file beside this module) prints one
``BENCH key=value ...`` line instead, with the latency percentiles in microseconds.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loadtest.payloads import Body
from loadtest.scenarios import Scenario
from loadtest.servers import Server

LUA = Path(__file__).resolve().parent / "bench.lua"


@dataclass
class Load:
    """One wrk run."""

    requests: int
    seconds: float
    rows: int
    errors: int
    p50_ms: float
    p99_ms: float
    #: the server tree's CPU seconds per second of the run
    server_cpu: float

    @property
    def rows_per_s(self) -> float:
        return self.requests * self.rows / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def run_wrk(
    server: Server, scenario: Scenario, body: Body, seconds: float, delay_ms: float = 0.0
) -> Load:
    """``scenario`` for ``seconds``; each connection pauses ``delay_ms`` on average between
    requests (0: back to back)."""
    with tempfile.NamedTemporaryFile(suffix=".body") as f:
        f.write(body.data)
        f.flush()
        env = {
            **os.environ,
            "BENCH_BODY": f.name,
            "BENCH_CONTENT_TYPE": body.content_type,
            "BENCH_HEADER_LENGTH": "" if body.header_length is None else str(body.header_length),
            "BENCH_DELAY_MS": str(delay_ms),
        }
        cpu_before = server.cpu_seconds()
        command = ["wrk", "-t", "1", "-c", str(scenario.connections), "-d", f"{seconds:g}s"]
        command += ["--timeout", "10s", "-s", str(LUA), server.url(scenario.path)]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        cpu = server.cpu_seconds() - cpu_before
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH "))
    vals = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    took = vals["duration_us"] / 1e6
    return Load(
        requests=vals["requests"],
        seconds=took,
        rows=scenario.rows,
        errors=vals["errors"] + vals["status_errors"],
        p50_ms=vals["p50_us"] / 1000,
        p99_ms=vals["p99_us"] / 1000,
        server_cpu=cpu / took,
    )
