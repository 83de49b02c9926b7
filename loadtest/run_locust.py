"""Run the ranking load of ``locustfile.py`` headless and judge it against thresholds.

    python -m loadtest.run_locust --url http://127.0.0.1:8000 --duration 60 --users 8 \
        --max-p99-ms 100 --max-error-ratio 0.01

Prints the request count, error ratio and latency percentiles over all requests, and exits
0 when both thresholds hold, 1 when either breaks, 2 when locust did not run or sent no
request (a load test that measured nothing must not pass).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
# locust runs in the directory holding the loadtest package: it puts its working directory on
# sys.path, which is how the locust file's ``loadtest.payloads`` import resolves.
PACKAGE_ROOT = LOCUSTFILE.parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of the service")
    parser.add_argument("--duration", type=float, required=True, help="seconds of load")
    parser.add_argument("--users", type=int, default=4, help="concurrent users")
    parser.add_argument("--spawn-rate", type=float, default=None, help="users started per s")
    parser.add_argument("--max-p99-ms", type=float, required=True, help="p99 latency bound")
    parser.add_argument(
        "--max-error-ratio", type=float, required=True, help="failed / all requests bound"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.users < 1:
        parser.error("--duration must be > 0 and --users >= 1")
    return args


def read_stats(stats_csv: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The Aggregated row and the per-endpoint rows of locust's stats CSV."""
    with stats_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    total = [row for row in rows if row["Name"] == "Aggregated"]
    if not total:
        raise ValueError(f"no Aggregated row in {stats_csv}")
    return total[0], [row for row in rows if row["Name"] != "Aggregated"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="locust-") as tmp:
        prefix = Path(tmp) / "run"
        command = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "--host", args.url, "--users", str(args.users),
            "--spawn-rate", str(args.spawn_rate or args.users),
            "--run-time", f"{max(1, round(args.duration))}s", "--stop-timeout", "10",
            "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, cwd=PACKAGE_ROOT)
        stats_csv = prefix.with_name("run_stats.csv")
        if not stats_csv.exists():
            print(result.stdout + result.stderr, file=sys.stderr)
            print("locust did not run", file=sys.stderr)
            return 2
        total, endpoints = read_stats(stats_csv)
        failures_csv = prefix.with_name("run_failures.csv")
        errors = (
            list(csv.DictReader(failures_csv.open(newline=""))) if failures_csv.exists() else []
        )
    requests = int(total["Request Count"])
    failures = int(total["Failure Count"])
    if requests == 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        print("no request was sent", file=sys.stderr)
        return 2
    error_ratio = failures / requests
    p50, p95, p99 = (float(total[k]) for k in ("50%", "95%", "99%"))
    print(
        f"requests {requests}  failures {failures}  error ratio {error_ratio:.4f}  "
        f"rps {float(total['Requests/s']):.1f}  p50 {p50:.0f} ms  p95 {p95:.0f} ms  "
        f"p99 {p99:.0f} ms"
    )
    for row in endpoints:
        print(
            f"  {row['Type']} {row['Name']}: {row['Request Count']} requests, "
            f"{row['Failure Count']} failures, p99 {row['99%']} ms"
        )
    for error in errors[:5]:
        print(
            f"  {error['Occurrences']} x {error['Method']} {error['Name']}: {error['Error'][:300]}"
        )
    broken = []
    if p99 > args.max_p99_ms:
        broken.append(f"p99 {p99:.0f} ms > {args.max_p99_ms:g} ms")
    if error_ratio > args.max_error_ratio:
        broken.append(f"error ratio {error_ratio:.4f} > {args.max_error_ratio:g}")
    if broken:
        print("FAILED: " + "; ".join(broken))
        return 1
    print("PASSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
