"""Shared pieces of the hostile-client suite: a real ``python -m service``, raw sockets, scale.

Every attack runs against a real process on 127.0.0.1 (a free port, loopback only). Every
loop here is bounded in count and in time. ``HOSTILE_SCALE=full`` (``make hostile``) raises
the connection counts to the issue's scale; the default keeps each test to seconds.
"""

from __future__ import annotations

import http.client
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.manifest import CategoricalFeature, Manifest
from service.versions import highest_version_dir
from tests.support import MODELS, ROOT, free_port, wait_until_ready

FULL = os.environ.get("HOSTILE_SCALE", "") == "full"


def scaled(default: int, full: int) -> int:
    """``default`` in ``make test``, ``full`` under ``HOSTILE_SCALE=full`` (``make hostile``)."""
    return full if FULL else default


#: Limits of the shared server (``conftest.py``), small so that each attack resolves within
#: seconds; the cap leaves room for 1,000 slowloris connections at full scale.
MAX_CONNECTIONS = scaled(48, 1024)
HEADER_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 2


def _limit_files(nofile: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, nofile)


class ServiceProcess:
    """``python -m service`` on a free loopback port; output goes to a file (never a pipe that
    could fill up and stall the server while a test is busy attacking it)."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        models: Path = MODELS,
        workers: int = 1,
        nofile: tuple[int, int] | None = None,
        grpc: bool = False,
    ) -> None:
        self.port = free_port()
        #: the gRPC port (0: no gRPC server)
        self.grpc_port = free_port() if grpc else 0
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="hostile-metrics-"))
        self._log = tempfile.NamedTemporaryFile(prefix="hostile-log-", delete=False)  # noqa: SIM115
        self._final: str | None = None
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--model-repository", str(models)]
        command += ["--workers", str(workers), *args]
        base = {k: v for k, v in os.environ.items() if not k.startswith("WATCHTIME_")}
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={
                **base,
                "WATCHTIME_INTRA_OP_THREADS": "1",
                "WATCHTIME_INTER_OP_THREADS": "1",
                "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
                "WATCHTIME_GRPC_PORT": str(self.grpc_port),
                **(env or {}),
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=None if nofile is None else lambda: _limit_files(nofile),
        )

    def output(self) -> str:
        if self._final is not None:
            return self._final
        return Path(self._log.name).read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        wait_until_ready(self.proc, self.port, timeout, self.output)

    def wait_exit(self, timeout: float) -> int:
        """The exit status once the process ends by itself within ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s:\n{self.output()}") from None

    def stop(self, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._final is None:
            self._final = self.output()
            self._log.close()
            os.unlink(self._log.name)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return self.proc.returncode

    def workers(self) -> list[int]:
        """Pids of the uvicorn worker processes (the process itself with one worker)."""
        children = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and b"spawn_main" in cmdline:
                children.append(int(entry))
        return sorted(children) or [self.proc.pid]


def socket_fds(pid: int) -> int:
    """Open sockets of a process (listening and accepted), from /proc."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident size (VmHWM) since it started or since
    :func:`reset_peak_rss`: the high-water mark, which sampling could miss."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def reset_peak_rss(pid: int) -> None:
    """Start :func:`peak_rss_bytes` again from the current resident size (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def open_files_soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files limit for {pid}")


def metric_value(port: int, name: str, **labels: str) -> float:
    """One sample of the service's ``/metrics`` page (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = get(port, "/metrics")
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def get(port: int, path: str, timeout: float = 10.0, **headers: str) -> tuple[int, bytes]:
    status, _, body = request(port, "GET", path, headers=headers, timeout=timeout)
    return status, body


def timed_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, float]:
    started = time.monotonic()
    status, _ = get(port, path, timeout=timeout)
    return status, time.monotonic() - started


def read_until_closed(sock: socket.socket, timeout: float, limit: int = 1 << 20) -> bytes:
    """What the server writes until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def status_of(raw: bytes) -> int | None:
    """Status code of a raw HTTP/1.1 response, None when nothing was written."""
    if not raw.startswith(b"HTTP/1.1 "):
        return None
    return int(raw[9:12])


def served_manifest(name: str = "egmn") -> Manifest:
    served = highest_version_dir(MODELS / name)
    assert served is not None, name
    return Manifest.read(served / "manifest.json")


def example_columns(n: int, name: str = "egmn") -> dict[str, list[Any]]:
    """Valid raw columns for ``n`` rows of a shipped model, built from its manifest alone."""
    columns: dict[str, list[Any]] = {}
    for spec in served_manifest(name).features:
        if spec.source in columns:
            continue
        if isinstance(spec, CategoricalFeature):
            if spec.transform == "hour_of_day":
                value: Any = 1230
            elif spec.transform == "weekday":
                value = 20220504
            elif spec.vocabulary:
                value = spec.vocabulary[0]
            else:
                value = 0 if spec.dtype == "int64" else "unknown"
        else:
            value = 1.0
        columns[spec.source] = [value] * n
    return columns


def v2_inputs(n: int, name: str = "egmn") -> list[dict[str, Any]]:
    """The example columns as v2 JSON tensors."""
    inputs = []
    for source, values in example_columns(n, name).items():
        if isinstance(values[0], str):
            datatype = "BYTES"
        elif isinstance(values[0], float):
            datatype = "FP64"
        else:
            datatype = "INT64"
        inputs.append({"name": source, "datatype": datatype, "shape": [n], "data": values})
    return inputs


def v2_binary_body(
    tensors: list[dict[str, Any]], parameters: dict[str, Any] | None = None
) -> tuple[bytes, int]:
    """v2 JSON tensors (as :func:`v2_inputs` makes them) as a binary-extension body, and the
    length of its JSON header."""
    header_inputs: list[dict[str, Any]] = []
    blobs = []
    for tensor in tensors:
        kind, values = tensor["datatype"], tensor["data"]
        if kind == "BYTES":
            blob = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        else:
            blob = np.asarray(values, "<i8" if kind == "INT64" else "<f8").tobytes()
        header_inputs.append(
            {"name": tensor["name"], "datatype": kind, "shape": tensor["shape"]}
            | {"parameters": {"binary_data_size": len(blob)}}
        )
        blobs.append(blob)
    doc: dict[str, Any] = {"inputs": header_inputs}
    if parameters:
        doc["parameters"] = parameters
    header = orjson.dumps(doc)
    return header + b"".join(blobs), len(header)


def predict_body(n: int = 2) -> bytes:
    return orjson.dumps({"features": example_columns(n)})
