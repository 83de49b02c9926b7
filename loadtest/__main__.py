"""This service beside the servers a team would otherwise write: one run, one table, one report.

Every server runs the shipped EGMN graph on the same 256 held-out test-day rows and answers
the same numbers: the exact mean, P(T <= 3 s), the masses of [0, 3), [3, 10), [10, inf) and
the quantiles 0.1/0.5/0.9. The peers (``loadtest/peers/``, in their own environment) take the
encoded tensors and find quantiles by 40-step bisection; this service takes the raw columns
and encodes them itself. One after another, one server process each, under the same ``wrk``
settings (1 thread, 8 connections, 15 s after a 3 s warm-up), the run measures:

* 256-row requests: rows/s, p50/p99; this service also over v2 binary tensors, at 70 % of
  its own saturated rate (p99), and with ``--workers 2``;
* 1-row requests at 64 connections;
* this service over gRPC (``ModelInfer``, raw contents), 256-row and 1-row, from a Python
  ``grpc.aio`` client (:mod:`loadtest.grpc_load`), once, in a process of its own;
* resident memory of the server's process tree;
* the feature lookup (:mod:`loadtest.lookup`): 256-row requests with every column beside
  ids-only ones against the embedded store and against Redis (a ``redis-server`` of its own
  on a free loopback port, the tables published into it, a second service process reading
  it); ``--no-redis`` leaves Redis out, and without ``redis-server`` its row says skipped;
* in process: the service's rows per CPU-second against bare onnxruntime on the same rows.

Before loading a peer, its answers are checked against this service's on the same rows
(1e-6 relative, 1e-9 absolute). A py-spy profile of this service's worker under the 256-row
load goes into the report. Run: ``make bench`` or ``python -m loadtest`` (writes
``reports/benchmarks.md``); ``--quick`` runs every load for about 2 s, in one round, as a
smoke test (give it a ``--report`` path of its own).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.agreement import reference_numbers
from loadtest.grpc_load import infer_message
from loadtest.inprocess import rows_per_cpu_second
from loadtest.lookup import measure_lookup
from loadtest.measure import (
    Row,
    Run,
    measure_grpc,
    measure_peer,
    measure_service,
    measure_workers,
)
from loadtest.paths import MODELS, REPORT, ROOT
from loadtest.payloads import INTERVALS, QUANTILES, HeldOutRows, benchmark_bodies
from loadtest.profiler import top_frames
from loadtest.report import Results, machine, write_report
from loadtest.scenarios import FULL, MODEL_DIR, QUICK, ROWS, Durations, peer_servers
from service.config import load_settings, usable_cores
from service.runtime.model import ModelRuntime, SessionConfig
from service.runtime.prediction import PredictOptions

ROUNDS, QUICK_ROUNDS = 3, 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--peers-python",
        default=str(ROOT / ".venv-peers" / "bin" / "python"),
        help="interpreter of the peers' environment (make bench builds .venv-peers)",
    )
    parser.add_argument("--no-peers", action="store_true", help="measure this service only")
    parser.add_argument("--no-grpc", action="store_true", help="leave out the gRPC loads")
    parser.add_argument(
        "--no-redis", action="store_true", help="leave out the ids-only load against Redis"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"rounds of the tuned peer beside this service ({ROUNDS}; --quick: {QUICK_ROUNDS})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: every load about 2 s, the in-process loops 1 s, one round",
    )
    parser.add_argument(
        "--report", type=Path, default=REPORT, help="where to write the markdown report"
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else ROUNDS
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def prepare_run(durations: Durations) -> Run:
    """Every body of the run, and this service's in-process answer for the same rows."""
    model = ModelRuntime.load(MODEL_DIR, SessionConfig())
    rows = HeldOutRows(model.sources, model.source_kinds, ROWS)
    bodies = benchmark_bodies(rows, model.encode(rows.columns))
    result = model.predict(rows.columns, PredictOptions.create(QUANTILES, INTERVALS))
    grpc = {n: infer_message(rows, n) for n in (ROWS, 1)}
    return Run(bodies, reference_numbers(result), durations, grpc)


def measure_in_process(durations: Durations) -> tuple[dict[int, tuple[float, float]], int]:
    """Rows per CPU-second for the benchmark's requests and the service's batch bound."""
    batch = load_settings(model_repository=str(MODELS)).max_batch_rows
    figures = {n: rows_per_cpu_second(n, durations.in_process) for n in sorted({ROWS, batch})}
    for n, (bare, served) in figures.items():
        print(
            f"in process, {n}-row batches: bare onnxruntime {bare:,.0f}, this service "
            f"{served:,.0f} rows/CPU-s"
        )
    return figures, batch


@dataclass
class Rounds:
    """The rows of the alternating rounds and the profile of the first one."""

    tuned: list[Row] = field(default_factory=list)
    mine: list[Row] = field(default_factory=list)
    others: list[Row] = field(default_factory=list)
    profile: list[tuple[str, float, float]] = field(default_factory=list)


def alternate(run: Run, rounds: int, peers_python: str | None) -> Rounds:
    """The tuned peer and this service, in turn, ``rounds`` times (fresh processes each time):
    on a shared machine the rate of one server moves by tens of percent between minutes, so
    every ratio is taken within a round and the median reported. The other peers, the
    profile and the latency row come from the first round only."""
    out = Rounds()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        for r in range(rounds):
            if peers_python is not None:
                tuned, *rest = peer_servers(peers_python)
                out.tuned.append(measure_peer(tuned, run))
                if r == 0:
                    out.others += [measure_peer(server, run) for server in rest]
            out.mine.append(measure_service(run, raw if r == 0 else None, r == 0))
        out.profile = top_frames(raw) if raw.exists() else []
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    durations = QUICK if args.quick else FULL
    load_before = os.getloadavg()[0]
    print(f"machine: {machine()}", flush=True)
    run = prepare_run(durations)
    in_process, batch = measure_in_process(durations)
    rounds = alternate(run, args.rounds, None if args.no_peers else args.peers_python)
    grpc = None if args.no_grpc else measure_grpc(run)
    lookup = measure_lookup(run, "left out (--no-redis)" if args.no_redis else None)
    cores = usable_cores()
    defaults = measure_workers(run, 0)  # the default: a worker per usable core
    print(f"defaults ({cores} workers): {defaults.rows_per_s:,.0f} rows/s")
    results = Results(
        tuned_rounds=rounds.tuned,
        mine_rounds=rounds.mine,
        others=rounds.others,
        defaults=defaults,
        grpc=grpc,
        lookup=lookup,
        in_process=in_process,
        batch=batch,
        profile=rounds.profile,
        load_before=load_before,
        load_after=os.getloadavg()[0],
        durations=durations,
    )
    write_report(results, args.report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
