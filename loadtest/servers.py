"""A server under test as a process group of its own, and what /proc says of its tree.

Every server (this service or a peer) may fork workers, so memory and CPU are summed over
the whole process tree, and stopping signals the whole group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.paths import ROOT

CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def process_tree(root: int) -> list[int]:
    tree, i = [root], 0
    while i < len(tree):
        tree += _children(tree[i])
        i += 1
    return tree


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Server:
    """A server command in a process group of its own, ready once ``health`` answers 200.

    ``{port}`` in the command stands for the port; the process runs in the repository root
    with it on ``PYTHONPATH``, so that ``python -m loadtest.peers...`` and ``python -m
    service`` import this tree's code whatever the environment has installed.
    """

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    health: str = "/healthz"
    proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        command = [c.replace("{port}", str(self.port)) for c in self.command]
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, "PYTHONPATH": str(ROOT), **self.env},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                raise RuntimeError(f"{self.name} exited: {err}")
            try:
                with urllib.request.urlopen(self.url(self.health), timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not answer in {START_TIMEOUT_S} s")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def pids(self) -> list[int]:
        assert self.proc is not None
        return process_tree(self.proc.pid)

    def rss_mb(self) -> float:
        return sum(_status_kb(p, "VmRSS:") for p in self.pids()) / 1024

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def busiest(self) -> int:
        """The process of the tree that has used the most CPU (a worker)."""
        return max(self.pids(), key=cpu_seconds)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        req = urllib.request.Request(self.url(path), data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            if r.status != 200:
                raise RuntimeError(f"{self.name} {path}: status {r.status}")
            return bytes(r.read())
