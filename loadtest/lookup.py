"""Ids-only requests: what the feature lookup costs, on the embedded store and on Redis.

Three loads of the same 256 held-out rows on the native route, one service worker each:
the request with every column (no lookup), the ids-only request (``user_id``, ``video_id``,
``tab``, ``hourmin``, ``date``) against the embedded store, both on the default server; then
the ids-only request against a second service process started with
``WATCHTIME_FEATURE_STORE=redis://127.0.0.1:<port>/0``, after a ``redis-server`` of its own on
a free loopback port (no persistence) has been started and the tables published into it with
``python -m model_export publish-features``. Redis shares the cores with the service and wrk.

The Redis service runs with the default lookup timeout (``WATCHTIME_FEATURE_STORE_TIMEOUT_MS``,
200 ms), so that the row shows what a deployment gets, lookups given up included: each is
counted from ``/metrics`` and shown (its rows were answered with those columns missing).
Before each ids-only load its answer is held against the full-column answer for the same
rows.

Without a ``redis-server`` (or when it does not start, or the tables cannot be published)
the Redis row is skipped and the reason printed and reported: the bench is not a test.
redis-server and the second service are stopped by their pids when the measurement ends,
also on an error.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

from loadtest.agreement import service_numbers, worst_difference
from loadtest.measure import Run
from loadtest.paths import ROOT
from loadtest.scenarios import IDS_256, NATIVE_256, Scenario, service_server
from loadtest.servers import Server, cpu_seconds, free_port
from loadtest.wrk import Load
from service.config import Settings

LOOKUP_ERRORS = "watchtime_feature_lookup_errors_total"
PUBLISH_TIMEOUT_S = 600


@dataclass
class LookupRow:
    """One load of the lookup table; ``load`` is None when it was skipped (``skipped``)."""

    request: str
    store: str
    load: Load | None
    #: the service's failed lookups after the load (from ``/metrics``)
    lookup_errors: float = 0.0
    #: the worst output against the full-column answer, in units of the tolerance
    agreement: tuple[str, float] | None = None
    #: redis-server's CPU seconds per second of the load
    redis_cpu: float | None = None
    skipped: str | None = None


@dataclass
class Lookup:
    """The full-column load and the ids-only ones, embedded and Redis."""

    full: LookupRow
    embedded: LookupRow
    redis: LookupRow

    @property
    def rows(self) -> list[LookupRow]:
        return [self.full, self.embedded, self.redis]


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    return found


class RedisUnavailable(Exception):
    """redis-server is missing, did not start, or the tables could not be published."""


class RedisProcess:
    """``redis-server`` on ``127.0.0.1:<free port>`` without persistence, in a session of its
    own, stopped by its pid on exit."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = ""

    def version(self) -> str:
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        words = [w for w in out.split() if w.startswith("v=")]
        return words[0][2:] if words else "?"

    def __enter__(self) -> RedisProcess:
        self.dir = tempfile.mkdtemp(prefix="loadtest-redis-")
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", self.dir]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RedisUnavailable(f"redis-server exited at start-up ({self.proc.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RedisUnavailable("redis-server did not listen within 10 s")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def publish(self) -> None:
        """``python -m model_export publish-features --to <url>``, as an operator runs it."""
        command = [sys.executable, "-m", "model_export", "publish-features", "--to", self.url]
        try:
            done = subprocess.run(
                [*command, "--quiet"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=PUBLISH_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise RedisUnavailable(f"publish-features took over {PUBLISH_TIMEOUT_S} s") from None
        if done.returncode != 0:
            raise RedisUnavailable(f"publish-features failed: {done.stderr.strip()[-500:]}")


def lookup_errors(server: Server) -> float:
    """The service's failed lookups so far, every store and reason."""
    with urllib.request.urlopen(server.url("/metrics"), timeout=10) as r:
        text = r.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == LOOKUP_ERRORS
    )


def _checked(run: Run, server: Server, scenario: Scenario) -> tuple[str, float]:
    """``server``'s answer to ``scenario`` against the full-column one for the same rows."""
    name, excess = worst_difference(service_numbers(run.answer(server, scenario)), run.reference)
    if excess > 1.0:
        raise RuntimeError(
            f"{server.name}: the ids-only answer's {name} differs from the full-column one "
            f"({excess:.2f} x the tolerance)"
        )
    return name, excess


IDS_REQUEST = "ids-only (`user_id`, `video_id`, `tab`, `hourmin`, `date`)"


def _measure_redis(run: Run, skip: str | None) -> LookupRow:
    """The ids-only load against a service reading a redis-server of its own."""
    binary = redis_server_binary()
    if skip is None and binary is None:
        skip = "redis-server is not installed (Debian's redis-server: `make system-deps`)"
    if skip is not None:
        return LookupRow(IDS_REQUEST, "Redis", None, skipped=skip)
    assert binary is not None
    with ExitStack() as stack:
        try:
            redis = stack.enter_context(RedisProcess(binary))
            redis.publish()
        except (RedisUnavailable, OSError) as e:
            return LookupRow(IDS_REQUEST, "Redis", None, skipped=str(e))
        env = {"WATCHTIME_FEATURE_STORE": redis.url}
        server = stack.enter_context(service_server(1, env=env))
        agreement = _checked(run, server, IDS_256)
        run.load(server, IDS_256, run.durations.warm)
        before = redis.cpu_seconds()
        load = run.load(server, IDS_256, run.durations.load)
        redis_cpu = (redis.cpu_seconds() - before) / load.seconds
        timeout = Settings.model_fields["feature_store_timeout_ms"].default
        store = f"Redis {redis.version()} on loopback, timeout {timeout:g} ms (the default)"
        return LookupRow(
            IDS_REQUEST,
            store,
            load,
            lookup_errors=lookup_errors(server),
            agreement=agreement,
            redis_cpu=redis_cpu,
        )


def measure_lookup(run: Run, skip_redis: str | None = None) -> Lookup:
    """The three loads; ``skip_redis`` (a reason) leaves the Redis one out."""
    with service_server(1) as server:
        full = LookupRow("every column", "(none needed)", run.warm_and_load(server, NATIVE_256))
        agreement = _checked(run, server, IDS_256)
        ids = run.warm_and_load(server, IDS_256)
        embedded = LookupRow(
            IDS_REQUEST, "embedded (default)", ids, lookup_errors(server), agreement
        )
    redis = _measure_redis(run, skip_redis)
    out = Lookup(full, embedded, redis)
    for row in out.rows:
        if row.load is None:
            print(f"lookup, {row.request} on {row.store}: skipped: {row.skipped}", flush=True)
        else:
            print(
                f"lookup, {row.request} on {row.store}: {row.load.rows_per_s:,.0f} rows/s "
                f"(p50 {row.load.p50_ms:.1f} ms, p99 {row.load.p99_ms:.1f} ms)",
                flush=True,
            )
    return out
