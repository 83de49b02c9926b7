"""The benchmark's markdown report (``reports/benchmarks.md`` by default) and its tables.

Every figure of the report comes from one run, with the machine and its load average beside
them: on a shared machine the figures move between runs, and a reader must be able to tell.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.agreement import ATOL, RTOL
from loadtest.lookup import Lookup, LookupRow
from loadtest.measure import Row
from loadtest.paths import ROOT
from loadtest.scenarios import MODEL_DIR, NATIVE_1, NATIVE_256, ROWS, Durations
from loadtest.wrk import Load
from service.config import usable_cores

#: (name, measured, bound, whether higher is better)
Target = tuple[str, float, float, bool]


@dataclass
class Results:
    """Everything one run measured, as the report needs it."""

    #: the tuned peer and this service, one Row per round (no peers: tuned_rounds is empty)
    tuned_rounds: list[Row]
    mine_rounds: list[Row]
    #: the other peers, measured in the first round only
    others: list[Row]
    #: this service with its default worker count
    defaults: Load
    #: this service over gRPC, 256-row and 1-row (None: left out)
    grpc: Row | None
    #: 256-row requests with every column and ids-only, embedded store and Redis
    lookup: Lookup
    #: batch rows -> (bare onnxruntime, this service) rows per CPU-second
    in_process: dict[int, tuple[float, float]]
    #: the service's default batch bound
    batch: int
    profile: list[tuple[str, float, float]]
    load_before: float
    load_after: float
    durations: Durations


def machine() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"cores": str(os.cpu_count()), "cpu": model, "python": platform.python_version()}


def median_row(rows: list[Row]) -> Row:
    """The round whose 256-row rate is the median (the lower middle for an even count)."""
    ranked = sorted(rows, key=lambda r: r.big.rows_per_s)
    return ranked[(len(ranked) - 1) // 2]


def _v2(row: Row) -> Load:
    assert row.v2 is not None, "only this service's rows carry the v2 load"
    return row.v2


def _table_line(row: Row) -> str:
    agree = "" if row.agreement is None else f"{row.agreement[1]:.2f}"
    return (
        f"| {row.name} | {row.big.rows_per_s:,.0f} | {row.big.p50_ms:.0f} / "
        f"{row.big.p99_ms:.0f} | {row.small.requests_per_s:,.0f} | {row.rss_mb:,.0f} MB | "
        f"{row.big.errors + row.small.errors} | {agree} |"
    )


def _server_table(results: Results) -> list[str]:
    """The side-by-side table: each peer's and this service's median round."""
    mine = median_row(results.mine_rounds)
    v2, two = _v2(mine), results.defaults
    tuned = [median_row(results.tuned_rounds)] if results.tuned_rounds else []
    return [
        "| server | rows/s, 256-row requests | p50 / p99 ms | 1-row req/s at c=64 | RSS "
        "| errors | answers vs this service (1 = the tolerance) |",
        "|---|---|---|---|---|---|---|",
        *(_table_line(r) for r in [*tuned, *results.others]),
        _table_line(mine),
        f"| this service, v2 binary tensors | {v2.rows_per_s:,.0f} | {v2.p50_ms:.0f} / "
        f"{v2.p99_ms:.0f} | | | {v2.errors} | |",
        *([] if results.grpc is None else [_table_line(results.grpc)]),
        f"| this service, defaults (`python -m service`: {usable_cores()} workers here) | "
        f"{two.rows_per_s:,.0f} | {two.p50_ms:.0f} / {two.p99_ms:.0f} | | | {two.errors} | |",
    ]


def _lookup_line(row: LookupRow, full: Load) -> str:
    if row.load is None:
        return f"| {row.request} | {row.store} | skipped: {row.skipped} | | | | | |"
    load = row.load
    agree = "" if row.agreement is None else f"{row.agreement[1]:.2f}"
    return (
        f"| {row.request} | {row.store} | {load.rows_per_s:,.0f} | {load.p50_ms:.1f} / "
        f"{load.p99_ms:.1f} | {load.rows_per_s / full.rows_per_s:.2f} | {load.errors} | "
        f"{row.lookup_errors:.0f} | {agree} |"
    )


def _lookup_table(lookup: Lookup) -> list[str]:
    """256-row requests with every column beside ids-only ones, embedded store and Redis."""
    full = lookup.full.load
    assert full is not None, "the full-column load always runs"
    return [
        "| 256-row request, native route | feature store | rows/s | p50 / p99 ms | rows/s / "
        "every column | errors | lookup errors | answers vs every column (1 = the tolerance) |",
        "|---|---|---|---|---|---|---|---|",
        *(_lookup_line(row, full) for row in lookup.rows),
    ]


def _lookup_section(lookup: Lookup) -> list[str]:
    redis = lookup.redis
    cpu = []
    if redis.load is not None and redis.redis_cpu is not None:
        cpu = [
            f"During the Redis load, redis-server used {redis.redis_cpu:.2f} CPU-s per second "
            f"and the service {redis.load.server_cpu:.2f}.",
            "",
        ]
    return [
        "## Ids-only requests: the feature lookup",
        "",
        f"The same {ROWS} rows on the native route, one worker: with every column (no lookup) "
        "and with the request-time columns only, the service looking the user and video "
        "columns up by id, in the embedded store (the default server, the same process as the "
        "full-column load) and in Redis (a second service process with "
        "`WATCHTIME_FEATURE_STORE=redis://127.0.0.1:<port>/0`, a `redis-server` of its own on "
        "the same machine, the tables published with `python -m model_export "
        "publish-features`), with the default lookup timeout. Lookup errors are the service's "
        "`watchtime_feature_lookup_errors_total` after the load: lookups given up, whose rows "
        "were answered with those columns missing. Each ids-only answer was checked against "
        "the full-column one first.",
        "",
        *_lookup_table(lookup),
        "",
        *cpu,
    ]


def _grpc_note(results: Results) -> list[str]:
    if results.grpc is None:
        return []
    return [
        "The gRPC row is this service with one worker and its gRPC port open, loaded by "
        "`loadtest/grpc_load.py` (`ModelInfer` with raw contents, the same rows, quantiles and "
        "intervals; as many calls in flight as wrk has connections, each on a channel of its "
        "own; a warm-up of a tenth of the load's time): a Python `grpc.aio` client, which "
        "takes more of the shared cores than wrk, so the gRPC and HTTP rates compare only "
        "roughly.",
    ]


def _rounds(results: Results) -> tuple[list[str], dict[str, list[float]]]:
    """The table of rounds, and the ratios to the tuned peer within each round."""
    lines = ["| round | tuned FastAPI rows/s | this service rows/s | ratio | v2 ratio | "
             "1-row ratio |", "|---|---|---|---|---|---|"]  # fmt: skip
    ratios: dict[str, list[float]] = {"native": [], "v2": [], "one": []}
    pairs = zip(results.tuned_rounds, results.mine_rounds, strict=False)
    for i, (peer, me) in enumerate(pairs, 1):
        native = me.big.rows_per_s / peer.big.rows_per_s
        binary = _v2(me).rows_per_s / peer.big.rows_per_s
        one = me.small.requests_per_s / peer.small.requests_per_s
        ratios["native"].append(native)
        ratios["v2"].append(binary)
        ratios["one"].append(one)
        lines.append(
            f"| {i} | {peer.big.rows_per_s:,.0f} | {me.big.rows_per_s:,.0f} | {native:.2f} | "
            f"{binary:.2f} | {one:.2f} |"
        )
    return lines, ratios


def _targets(results: Results, ratios: dict[str, list[float]]) -> list[Target]:
    mine, first = median_row(results.mine_rounds), results.mine_rounds[0]
    latency = _latency(results)
    bare, served = results.in_process[results.batch]
    targets: list[Target] = []
    if results.tuned_rounds:
        targets += [
            ("256-row native JSON / tuned FastAPI", float(np.median(ratios["native"])), 1.5, True),
            ("256-row v2 binary / tuned FastAPI", float(np.median(ratios["v2"])), 2.0, True),
            ("1-row req/s at c=64 / tuned FastAPI", float(np.median(ratios["one"])), 2.0, True),
        ]
    targets += [
        (
            f"p99 ms at {latency.rows_per_s / first.big.rows_per_s:.0%} of the saturated rate",
            latency.p99_ms,
            25.0,
            False,
        ),
        (
            f"defaults ({usable_cores()} workers) / one worker",
            results.defaults.rows_per_s / mine.big.rows_per_s,
            1.7,
            True,
        ),
        ("RSS MB of the one-worker server", mine.rss_mb, 200.0, False),
        (
            f"in-process rows per CPU-s / bare onnxruntime ({results.batch}-row batches)",
            served / bare,
            0.35,
            True,
        ),
    ]
    return targets


def _latency(results: Results) -> Load:
    latency = results.mine_rounds[0].latency
    assert latency is not None, "the first round measures the latency row"
    return latency


def _target_lines(targets: list[Target]) -> list[str]:
    lines = ["| target | measured | bound | met | missed by |", "|---|---|---|---|---|"]
    for name, value, bound, higher in targets:
        met = value >= bound if higher else value <= bound
        short = ""
        if not met:
            short = f"{1 - value / bound:.0%} short" if higher else f"{value / bound:.2f}x over"
        verdict = "yes" if met else "no"
        sign = ">=" if higher else "<="
        lines.append(f"| {name} | {value:.2f} | {sign} {bound:g} | {verdict} | {short} |")
    return lines


def _introduction(results: Results) -> list[str]:
    """The title, the machine, what every server answers and how the rounds ran."""
    m = machine()
    return [
        "# Benchmarks: this service beside the servers a team would write",
        "",
        "Written by `make bench` (`python -m loadtest`); every figure is from one run.",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}; one-minute load "
        f"average {results.load_before:.1f} before the run and {results.load_after:.1f} after. "
        "`wrk` (1 thread) shares the cores with the server under test; servers run one after "
        "another, one server process each.",
        "",
        f"Every request: {ROWS} held-out test-day rows (or the first of them), and every server "
        "answers the same numbers: the exact mean, P(T <= 3 s), the masses of [0, 3), [3, 10), "
        "[10, inf) and the quantiles 0.1/0.5/0.9 of the shipped EGMN "
        f"(`{MODEL_DIR.relative_to(ROOT)}`). The peers take the encoded tensors and bisect 40 "
        "times for each quantile; this service takes the raw columns, encodes them itself and "
        "finds quantiles to its stated tolerance. Each peer's answer on the 256 rows was "
        f"checked against this service's before its load (|a - b| <= {ATOL:g} + {RTOL:g} |b|; "
        "the last column is the worst ratio to that bound).",
        "",
        f"The tuned peer and this service ran in {len(results.mine_rounds)} alternating rounds "
        "(fresh processes each); the table shows each one's median round, and the ratios of the "
        "targets are the medians of the ratios within a round:",
        "",
    ]


def _in_process_section(results: Results) -> list[str]:
    latency = _latency(results)
    return [
        "In process, on batches of the same held-out rows with one onnxruntime thread "
        "(rows per CPU-second; the service's path is what its worker thread does with a "
        "batch: encoding the raw columns, onnxruntime, post-processing; "
        f"{results.batch} rows is the service's default batch bound):",
        "",
        "| batch rows | bare onnxruntime | this service | ratio |",
        "|---|---|---|---|",
        *(
            f"| {n} | {b:,.0f} | {s:,.0f} | {s / b:.2f} |"
            for n, (b, s) in sorted(results.in_process.items())
        ),
        "",
        f"The latency row ran at {latency.rows_per_s:,.0f} rows/s "
        f"(p50 {latency.p50_ms:.1f} ms, p99 {latency.p99_ms:.1f} ms).",
        "",
    ]


def _profile_section(profile: list[tuple[str, float, float]]) -> list[str]:
    if not profile:
        return []
    return [
        "## Where this service's time goes",
        "",
        "py-spy, 100 samples/s of every thread of the worker during the 256-row native "
        "load; shares of the busy samples (threads waiting on a queue or a socket left "
        "out). Inclusive = the frame and what it called.",
        "",
        "| frame | inclusive | self |",
        "|---|---|---|",
        *(f"| `{f}` | {inc:.1%} | {own:.1%} |" for f, inc, own in profile),
        "",
    ]


def write_report(results: Results, path: Path) -> None:
    """Write the report to ``path`` and print its two tables."""
    table = _server_table(results)
    rounds, ratios = _rounds(results)
    target_lines = _target_lines(_targets(results, ratios))
    durations = results.durations
    text = [
        *_introduction(results),
        *rounds,
        "",
        f"Load: {NATIVE_256.connections} connections for 256-row requests, "
        f"{NATIVE_1.connections} for 1-row ones, {durations.load:g} s after a "
        f"{durations.warm:g} s warm-up. RSS: the server's whole process tree.",
        *_grpc_note(results),
        "",
        *table,
        "",
        "## Targets",
        "",
        *target_lines,
        "",
        *_lookup_section(results.lookup),
        *_in_process_section(results),
        *_profile_section(results.profile),
    ]
    path.write_text("\n".join(text))
    print("\n".join(table))
    print("\n".join(_lookup_table(results.lookup)))
    print("\n".join(target_lines))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
