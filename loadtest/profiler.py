"""Where a server worker's time goes: py-spy's raw stacks, reduced to the busy frames.

The worker's threads spend most samples waiting (on a queue, a condition, the event loop's
select); those samples say nothing of the cost of a request, so they are left out before
the shares are taken.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: leaf frames of a thread that waits
IDLE = (
    "Condition.wait",
    "Runner.run",
    "Event.wait",
    "Queue.get",
    "_worker (concurrent",
    "select (",
    "_run_once",
)


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy on one process (raw stacks, every thread); None when py-spy is missing."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return None
    command = [str(spy), "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", "100"]
    command += ["-f", "raw", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_frames(raw: Path, count: int = 24) -> list[tuple[str, float, float]]:
    """(frame, inclusive share, self share) of the busy samples; idle waits left out."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or frames[-1].startswith(IDLE):
            continue
        total += int(n)
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + int(n)
        own[frames[-1]] = own.get(frames[-1], 0) + int(n)
    total = total or 1
    wanted = [f for f in inclusive if "service/" in f or own.get(f, 0) >= 0.02 * total]
    ranked = sorted(wanted, key=lambda f: -inclusive[f])[:count]
    return [(f, inclusive[f] / total, own.get(f, 0) / total) for f in ranked]
