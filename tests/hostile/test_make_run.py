"""``WATCHTIME_PORT=9000 make run`` once served on 8000: the Makefile's ``--port`` won."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.support import ROOT, free_port
from tests.support.hostile import get


def _make_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHTIME_", "MAKE"))}
    env.pop("PORT", None)
    env.pop("HOST", None)
    return {**env, "WATCHTIME_GRPC_PORT": "0", **extra}


def test_make_run_follows_watchtime_port() -> None:
    port = free_port()
    env = _make_env(
        WATCHTIME_PORT=str(port), WATCHTIME_HOST="127.0.0.1", WATCHTIME_INTRA_OP_THREADS="1"
    )
    # -o: take the installed environment as it is (never reinstall from a test)
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-o", ".venv/.serve", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = get(port, "/readyz", timeout=1)[0]
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, "make run did not serve on WATCHTIME_PORT"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert "--port" not in out.decode().splitlines()[0], out[:500]


def test_make_run_port_variable_still_wins() -> None:
    env = _make_env(WATCHTIME_PORT="9000")
    done = subprocess.run(
        ["make", "-n", "-o", ".venv/.serve", "run", "PORT=9100", "HOST=127.0.0.2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--host 127.0.0.2 --port 9100" in done.stdout
