"""How much of the in-process throughput survives HTTP: one run, one table, one report.

Measures on the shipped EGMN, with 256 real test-day rows per request and the options a
ranking client asks for (quantiles 0.1/0.5/0.9, masses of [0, 3), [3, 10), [10, inf)):

(a) the in-process limit: decoded columns -> manifest transforms -> onnxruntime ->
    post-processor, one process per core in parallel (the hardware's limit), and one
    process alone;
(b) HTTP native columnar JSON, (c) native row form, (d) v2 binary tensors, against
    ``python -m service`` with one worker per core, driven by ``wrk`` (compiled, keep-alive);
    the generator's own CPU use is reported, and (d) is repeated with twice the generator
    threads to show the generator is not what limits the rate;
p50/p99 latency of 256-row native requests at about 70% of the saturated rate;
(e) 1-row requests at concurrency 64, dynamic batching on and off;
and the resident memory of each worker with every model under ``models/`` loaded.

Run: ``make bench`` (or ``python loadtest/benchmark.py``). Writes ``reports/benchmarks.md``
and ``reports/benchmarks.png``. Server and generator share the machine's cores; that is
stated in the report, not hidden.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_export.data import load_joined, raw_columns, split_by_day  # noqa: E402
from service.runtime.inference import PredictOptions, predict  # noqa: E402
from service.runtime.repository import (  # noqa: E402
    SessionConfig,
    latest_version_dir,
    load_model,
)

MODEL_DIR = latest_version_dir(ROOT / "models", "egmn")  # the EGMN the service serves
LUA = Path(__file__).resolve().parent / "bench.lua"
REPORT = ROOT / "reports" / "benchmarks.md"
PLOT = ROOT / "reports" / "benchmarks.png"
ROWS = 256
QUANTILES = [0.1, 0.5, 0.9]
INTERVALS: list[list[float | None]] = [[0.0, 3.0], [3.0, 10.0], [10.0, None]]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- request data


def test_day_rows(n: int) -> tuple[dict[str, np.ndarray], dict[str, list[Any]]]:
    """``n`` held-out rows as numpy columns (what decoding yields) and as JSON columns."""
    model = load_model(MODEL_DIR, SessionConfig())
    rows = split_by_day(load_joined()).test.iloc[:n]
    columns = raw_columns(rows, model.sources)
    as_json: dict[str, list[Any]] = {}
    for name, col in columns.items():
        if col.dtype.kind == "f":
            as_json[name] = [None if v != v else v for v in col.tolist()]
        else:
            as_json[name] = col.tolist()
    return columns, as_json


def native_columnar(as_json: dict[str, list[Any]]) -> bytes:
    return json.dumps(
        {"features": as_json, "quantiles": QUANTILES, "intervals": INTERVALS}
    ).encode()


def native_rows(as_json: dict[str, list[Any]]) -> bytes:
    names = list(as_json)
    n = len(as_json[names[0]])
    instances = [{k: as_json[k][i] for k in names} for i in range(n)]
    return json.dumps(
        {"instances": instances, "quantiles": QUANTILES, "intervals": INTERVALS}
    ).encode()


def v2_binary(columns: dict[str, np.ndarray], kinds: dict[str, str]) -> tuple[bytes, int]:
    """A binary-extension request; every output asked back as binary too."""
    inputs, blobs = [], []
    for name, col in columns.items():
        if kinds[name] == "string":
            texts = [("" if v is None else str(v)).encode() for v in col]
            blob = b"".join(struct.pack("<I", len(t)) + t for t in texts)
            datatype = "BYTES"
        elif col.dtype.kind == "f":
            blob, datatype = col.astype("<f8").tobytes(), "FP64"
        else:
            blob, datatype = col.astype("<i8").tobytes(), "INT64"
        inputs.append(
            {
                "name": name,
                "shape": [len(col)],
                "datatype": datatype,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = json.dumps(
        {
            "inputs": inputs,
            "parameters": {
                "quantiles": QUANTILES,
                "intervals": INTERVALS,
                "binary_data_output": True,
            },
        }
    ).encode()
    return header + b"".join(blobs), len(header)


# --------------------------------------------------------------------------- (a) in process


def _in_process_worker(
    args: tuple[dict[str, np.ndarray], float, int, Any],
) -> tuple[float, float]:
    columns, seconds, threads, barrier = args
    model = load_model(MODEL_DIR, SessionConfig(threads, 1))
    options = PredictOptions.create(QUANTILES, INTERVALS)
    for _ in range(5):
        predict(model, columns, options)
    barrier.wait()
    done = 0
    start, cpu = time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        predict(model, columns, options)
        done += ROWS
    return done / elapsed, done / (time.process_time() - cpu)


def in_process(
    columns: dict[str, np.ndarray], processes: int, threads: int, seconds: float
) -> tuple[float, float]:
    """Rows/s summed over ``processes`` processes, each scoring 256-row batches in a loop, and
    rows per CPU-second of one process (threads included): the figure other work on a shared
    machine does not change."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(processes)
        with ctx.Pool(processes) as pool:
            rates = pool.map(_in_process_worker, [(columns, seconds, threads, barrier)] * processes)
    return float(sum(r for r, _ in rates)), float(np.mean([c for _, c in rates]))


# --------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Server:
    """``python -m service`` in a process group of its own, one worker per core."""

    workers: int
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(self.url("/readyz"), timeout=2) as r:
                    if r.status == 200 and len(self.worker_pids()) >= self.workers:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not become ready in 120 s")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes (the server itself when it runs a single worker)."""
        assert self.proc is not None
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        # multiprocessing's resource tracker is a child too; workers are the python -m ones
        workers = [
            p for p in pids if "spawn_main" in _cmdline(p) and "resource_tracker" not in _cmdline(p)
        ]
        return workers or [self.proc.pid]

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(p) for p in self.worker_pids())


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Load:
    """One wrk run: achieved rates, latency percentiles, generator and server CPU."""

    name: str
    requests: int
    seconds: float
    rows_per_request: int
    errors: int
    p50_ms: float
    p99_ms: float
    wrk_threads: int
    connections: int
    wrk_cpu: float
    server_cpu: float

    @property
    def rows_per_s(self) -> float:
        return self.requests * self.rows_per_request / self.seconds


def run_wrk(
    server: Server,
    name: str,
    path: str,
    body: bytes,
    rows: int,
    *,
    connections: int,
    threads: int,
    seconds: float,
    content_type: str = "application/json",
    header_length: int | None = None,
    delay_ms: float = 0.0,
) -> Load:
    with tempfile.NamedTemporaryFile(suffix=".body") as f:
        f.write(body)
        f.flush()
        env = {
            **os.environ,
            "BENCH_BODY": f.name,
            "BENCH_CONTENT_TYPE": content_type,
            "BENCH_HEADER_LENGTH": "" if header_length is None else str(header_length),
            "BENCH_DELAY_MS": str(delay_ms),
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = server.cpu_seconds()
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{seconds:g}s",
                "--timeout",
                "10s",
                "-s",
                str(LUA),
                server.url(path),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        server_cpu = server.cpu_seconds() - server_before
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH "))
    vals = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    took = vals["duration_us"] / 1e6
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Load(
        name=name,
        requests=vals["requests"],
        seconds=took,
        rows_per_request=rows,
        errors=vals["errors"] + vals["status_errors"],
        p50_ms=vals["p50_us"] / 1000,
        p99_ms=vals["p99_us"] / 1000,
        wrk_threads=threads,
        connections=connections,
        wrk_cpu=wrk_cpu / took,
        server_cpu=server_cpu / took,
    )


IDLE_LEAVES = (
    "Condition.wait",
    "Runner.run",
    "Event.wait",
    "Queue.get",
    "Connection._recv",
    "Connection.poll",
    "_worker",
)


def profile_worker(pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """Start py-spy on one worker (raw stacks); None when py-spy is not installed."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return None
    out = Path(tempfile.gettempdir()) / f"benchmark-pyspy-{pid}.txt"
    cmd = [
        str(spy),
        "record",
        "--function",
        "-p",
        str(pid),
        "-d",
        f"{seconds:g}",
        "-r",
        "200",
        "-f",
        "raw",
    ]
    return subprocess.Popen(
        [*cmd, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def top_frames(raw: Path, count: int = 18) -> list[tuple[str, float, float]]:
    """(frame, inclusive share, self share) of the busy samples: idle waits left out."""
    busy: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if frames and not frames[-1].startswith(IDLE_LEAVES):
            busy.append((frames, int(n)))
    total = sum(n for _, n in busy) or 1
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    for frames, n in busy:
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    # the service's frames, the server stack, and any leaf with a visible share of its own
    wanted = [
        f
        for f in inclusive
        if "service/" in f or f == frames_root(f) or own.get(f, 0) >= 0.02 * total
    ]
    ranked = sorted(wanted, key=lambda f: -inclusive[f])[:count]
    return [(f, inclusive[f] / total, own.get(f, 0) / total) for f in ranked]


def frames_root(frame: str) -> str:
    """Frames outside the service worth naming: the server stack and the libraries' kernels."""
    keep = ("httptools_impl", "starlette/routing", "orjson", "Session.run", "fastapi/routing")
    return frame if any(k in frame for k in keep) else ""


def check_answer(server: Server, path: str, body: bytes, headers: dict[str, str]) -> None:
    """One request by hand first: a load test of error answers would measure nothing."""
    req = urllib.request.Request(server.url(path), data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 200:
            raise RuntimeError(f"{path}: status {r.status}")
        r.read()


# --------------------------------------------------------------------------- the run


def machine() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"cores": str(os.cpu_count()), "cpu": model, "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each load run")
    parser.add_argument("--connections", type=int, default=16, help="connections to saturate")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    seconds = args.seconds
    columns, as_json = test_day_rows(ROWS)
    kinds = load_model(MODEL_DIR, SessionConfig()).source_kinds
    results: dict[str, Any] = {
        "machine": machine(),
        "rows": ROWS,
        "load_before": os.getloadavg()[0],
    }

    print(f"machine: {cores} cores, {results['machine']['cpu']}", flush=True)
    a_par = in_process(columns, cores, 1, seconds)
    a_one = in_process(columns, 1, 1, seconds)
    a_default = in_process(columns, 1, 0, seconds)
    print(
        f"(a) in-process: {a_par[0]:,.0f} rows/s ({cores} processes), {a_one[0]:,.0f} (one), "
        f"{a_default[0]:,.0f} (one, onnxruntime's default threads); "
        f"{a_one[1]:,.0f} rows per CPU-second",
        flush=True,
    )

    col_body = native_columnar(as_json)
    row_body = native_rows(as_json)
    bin_body, bin_header = v2_binary(columns, kinds)
    single = native_columnar({k: v[:1] for k, v in as_json.items()})
    loads: list[Load] = []
    profiles: dict[str, list[tuple[str, float, float]]] = {}
    env = {"WATCHTIME_INTRA_OP_THREADS": "1", "WATCHTIME_INTER_OP_THREADS": "1"}
    c, t = args.connections, 1
    # (b)-(d) and the latency run with the shipped settings (dynamic batching on)
    with Server(cores, {**env, "WATCHTIME_BATCHING": "true"}) as server:
        rss = [_rss_mb(p) for p in server.worker_pids()]
        json_h = {"content-type": "application/json"}
        check_answer(server, "/v1/predict", col_body, json_h)
        check_answer(server, "/v1/predict", row_body, json_h)
        check_answer(
            server,
            "/v2/models/egmn/infer",
            bin_body,
            {
                "content-type": "application/octet-stream",
                "Inference-Header-Content-Length": str(bin_header),
            },
        )
        # warm every worker's code paths before timing
        run_wrk(server, "warm", "/v1/predict", col_body, ROWS, connections=c, threads=t, seconds=2)
        for name, path, body, ctype, hl in (
            ("(b) native columnar JSON", "/v1/predict", col_body, "application/json", None),
            ("(c) native row form", "/v1/predict", row_body, "application/json", None),
            (
                "(d) v2 binary tensors",
                "/v2/models/egmn/infer",
                bin_body,
                "application/octet-stream",
                bin_header,
            ),
            (
                "(d') v2 binary, 2x wrk threads",
                "/v2/models/egmn/infer",
                bin_body,
                "application/octet-stream",
                bin_header,
            ),
        ):
            threads = 2 * t if name.startswith("(d')") else t
            spy = (
                profile_worker(server.worker_pids()[0], seconds - 1)
                if name[:3] in "(b)(c)"
                else None
            )
            load = run_wrk(
                server,
                name,
                path,
                body,
                ROWS,
                connections=c,
                threads=threads,
                seconds=seconds,
                content_type=ctype,
                header_length=hl,
            )
            loads.append(load)
            if spy is not None:
                spy.wait()
                raw = Path(tempfile.gettempdir()) / f"benchmark-pyspy-{server.worker_pids()[0]}.txt"
                if raw.exists():
                    profiles[name] = top_frames(raw)
                    raw.unlink()
            print(f"{name}: {load.rows_per_s:,.0f} rows/s, wrk CPU {load.wrk_cpu:.0%}", flush=True)
        # ~70% of the saturated native columnar rate: each connection pauses between
        # requests; one short calibration run corrects the pause for the latency it sees.
        sat = loads[0]
        target_rps = 0.7 * sat.requests / sat.seconds
        conns = 2 * cores
        delay = 1000 * conns / target_rps - 1000 * cores / (sat.requests / sat.seconds)
        for _ in range(2):
            probe = run_wrk(
                server,
                "calibrate",
                "/v1/predict",
                col_body,
                ROWS,
                connections=conns,
                threads=1,
                seconds=3,
                delay_ms=max(delay, 0.0),
            )
            got = probe.requests / probe.seconds
            delay += 1000 * conns / target_rps - 1000 * conns / got
        lat = run_wrk(
            server,
            "p50/p99 at ~70% load (native columnar)",
            "/v1/predict",
            col_body,
            ROWS,
            connections=conns,
            threads=1,
            seconds=max(seconds, 10),
            delay_ms=max(delay, 0.0),
        )
        loads.append(lat)
        print(
            f"latency at {lat.rows_per_s / sat.rows_per_s:.0%} load: p50 {lat.p50_ms:.1f} ms, "
            f"p99 {lat.p99_ms:.1f} ms",
            flush=True,
        )
        e_on = run_wrk(
            server,
            "(e) 1-row, c=64, batching on",
            "/v1/predict",
            single,
            1,
            connections=64,
            threads=1,
            seconds=seconds,
        )
        loads.append(e_on)
        print(f"(e) batching on: {e_on.rows_per_s:,.0f} rows/s", flush=True)
    with Server(cores, {**env, "WATCHTIME_BATCHING": "false"}) as server:
        check_answer(server, "/v1/predict", single, {"content-type": "application/json"})
        run_wrk(server, "warm", "/v1/predict", single, 1, connections=64, threads=1, seconds=2)
        e_off = run_wrk(
            server,
            "(e) 1-row, c=64, batching off",
            "/v1/predict",
            single,
            1,
            connections=64,
            threads=1,
            seconds=seconds,
        )
        loads.append(e_off)
        print(f"(e) batching off: {e_off.rows_per_s:,.0f} rows/s", flush=True)

    results["load_after"] = os.getloadavg()[0]
    write_report(
        results, cores, (a_par, a_one, a_default), loads, rss, lat.rows_per_s / sat.rows_per_s
    )
    write_profiles(profiles)
    return 0


def _fmt_rows(loads: list[Load], a: float, a_cpu: float) -> list[str]:
    lines = []
    for ld in loads:
        per_cpu = ld.rows_per_s / max(ld.server_cpu, 1e-9)
        lines.append(
            f"| {ld.name} | {ld.rows_per_request} | {ld.connections} | {ld.rows_per_s:,.0f} | "
            f"{ld.rows_per_s / a:.2f} | {per_cpu:,.0f} | {per_cpu / a_cpu:.2f} | "
            f"{ld.p50_ms:.1f} | {ld.p99_ms:.1f} | {ld.errors} | "
            f"{ld.wrk_threads} | {ld.wrk_cpu:.0%} | {ld.server_cpu:.0%} |"
        )
    return lines


def write_report(
    results: dict[str, Any],
    cores: int,
    limits: tuple[tuple[float, float], tuple[float, float], tuple[float, float]],
    loads: list[Load],
    rss: list[float],
    load_frac: float,
) -> None:
    (a_par, _), (a_one, a_cpu), (a_default, a_default_cpu) = limits
    by = {ld.name[:4]: ld for ld in loads}
    b, d = by["(b) "], by["(d) "]
    lat = next(ld for ld in loads if ld.name.startswith("p50"))
    e_off = next(ld for ld in loads if "batching off" in ld.name)
    e_on = next(ld for ld in loads if "batching on" in ld.name)
    table = [
        "| measurement | rows/request | connections | rows/s | ratio to (a) | rows per CPU-s "
        "| CPU ratio to (a) | p50 ms | p99 ms | errors | wrk threads | wrk CPU | server CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| (a) in-process, {cores} processes (one per core) | {ROWS} | - | {a_par:,.0f} | 1.00 "
        f"| {a_cpu:,.0f} | 1.00 | | | | | | |",
        f"| (a1) in-process, one process | {ROWS} | - | {a_one:,.0f} | {a_one / a_par:.2f} "
        f"| {a_cpu:,.0f} | 1.00 | | | | | | |",
        f"| (a0) one process, onnxruntime's default threads | {ROWS} | - | {a_default:,.0f} | "
        f"{a_default / a_par:.2f} | {a_default_cpu:,.0f} | {a_default_cpu / a_cpu:.2f} "
        "| | | | | | |",
        *_fmt_rows(loads, a_par, a_cpu),
    ]
    cpu_ratio = {ld.name: ld.rows_per_s / max(ld.server_cpu, 1e-9) / a_cpu for ld in loads}
    targets = [
        ("(b)/(a) >= 0.5, wall clock", b.rows_per_s / a_par, 0.5, True),
        ("(b)/(a) >= 0.5, per CPU-second", cpu_ratio[b.name], 0.5, True),
        ("(d)/(a) >= 0.8, wall clock", d.rows_per_s / a_par, 0.8, True),
        ("(d)/(a) >= 0.8, per CPU-second", cpu_ratio[d.name], 0.8, True),
        ("p99 <= 25 ms at ~70% load", lat.p99_ms, 25.0, False),
        (
            "(e) batching on / off >= 2",
            e_on.rows_per_s / max(e_off.rows_per_s, 1e-9),
            2.0,
            True,
        ),
        ("RSS per worker <= 300 MB", max(rss), 300.0, False),
    ]
    target_lines = ["| target | measured | met | missed by |", "|---|---|---|---|"]
    for name, value, limit, higher in targets:
        met = value >= limit if higher else value <= limit
        verdict = "not measured" if value != value else ("yes" if met else "no")
        short = ""
        if verdict == "no":
            short = f"{1 - value / limit:.0%} short" if higher else f"{value / limit:.1f}x over"
        target_lines.append(f"| {name} | {value:.2f} | {verdict} | {short} |")
    m = results["machine"]
    text = "\n".join(
        [
            "# Benchmarks: in-process limit against HTTP",
            "",
            "Written by `make bench` (`loadtest/benchmark.py`); all figures are from one run.",
            "",
            f"Machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}. Server: `python -m "
            f"service --workers {cores}` (one worker per core, dynamic batching on as shipped "
            "except for (e) off, onnxruntime 1 intra-op thread per "
            "session), the shipped models loaded. Load generator: `wrk` (compiled, keep-alive), "
            "on the same cores as the server: nothing is pinned, so the server's figures are "
            "after the generator's share (its CPU column; 100% = one core).",
            "",
            f"Every request: {ROWS} held-out test-day rows (1 for (e)), quantiles 0.1/0.5/0.9, "
            "masses of [0, 3), [3, 10), [10, inf). Ratios are to (a), the in-process limit with "
            "one process per core, each scoring decoded columns through the manifest transforms, "
            "onnxruntime and the post-processor in a loop.",
            "",
            "Two views of every figure. Wall clock: rows/s as measured, against (a) measured the "
            "same way. Per CPU-second: rows per second of CPU the server's workers (or the "
            "in-process loop) actually used, against the in-process loop's; this is what the "
            "same code would give with the cores to itself, and the view to trust when the "
            "load average below exceeds the core count (other work then takes cores away from "
            "the server and from (a) by different amounts at different moments).",
            "",
            *table,
            "",
            f"The latency row ran at {load_frac:.0%} of the saturated native columnar rate. "
            f"Resident memory per worker after start-up: "
            f"{', '.join(f'{r:.0f} MB' for r in rss)}. One-minute load average of the machine "
            f"before and after the run: {results['load_before']:.1f} and "
            f"{results['load_after']:.1f} (other work on the machine lowers every HTTP figure).",
            "",
            "## Targets",
            "",
            *target_lines,
            "",
            "![rows/s per measurement](benchmarks.png)",
            "",
        ]
    )
    REPORT.write_text(text)
    plot(a_par, a_one, loads)
    print("\n".join(table))
    print("\n".join(target_lines))
    print(f"wrote {REPORT.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}")


def write_profiles(profiles: dict[str, list[tuple[str, float, float]]]) -> None:
    """Append each sampled profile (py-spy, one worker, busy samples only) to the report."""
    if not profiles:
        return
    lines = [
        "## Where a worker's time goes",
        "",
        "py-spy, 200 samples/s on one worker during the run named; shares of the samples in "
        "which the worker was busy (waiting on a queue or in the event loop's poll left out). "
        "Inclusive = the frame and everything it called.",
        "",
    ]
    for name, frames in profiles.items():
        lines += [f"### {name}", "", "| frame | inclusive | self |", "|---|---|---|"]
        lines += [f"| `{f}` | {inc:.1%} | {own:.1%} |" for f, inc, own in frames]
        lines.append("")
    with REPORT.open("a") as out:
        out.write("\n".join(lines))


def plot(a_par: float, a_one: float, loads: list[Load]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["(a) in-process", "(a1) one process", *[ld.name for ld in loads]]
    values = [a_par, a_one, *[ld.rows_per_s for ld in loads]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.barh(names[::-1], values[::-1], color="#4c72b0")
    ax.axvline(a_par, color="#c44e52", linestyle="--", label="(a) limit")
    ax.set_xlabel("rows/s")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
