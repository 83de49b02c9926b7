"""A real server under the load test (a short locust run passes, broken thresholds fail)
and probed by the image's HEALTHCHECK command.

``loadtest/run_locust.py`` starts locust headless with ``loadtest/locustfile.py`` (requests
of 50 to 500 real test-day rows, native and v2 users) against ``python -m service``; every
non-200 answer or wrong row count is a locust failure, so a passing run with an error
threshold of 0 means every request sent was scored.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT, free_port
from tests.support.deploy import ServiceProcess

pytestmark = pytest.mark.slow

RUNNER = ROOT / "loadtest" / "run_locust.py"


def _run(url: str, *thresholds: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    command = [sys.executable, str(RUNNER), "--url", url, "--duration", "4", "--users", "2"]
    result = subprocess.run(
        [*command, *thresholds],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )
    return result.returncode, result.stdout + result.stderr


def _requests(output: str) -> int:
    match = re.search(r"requests (\d+)  failures (\d+)", output)
    assert match, output
    return int(match.group(1))


def test_short_run_passes_with_no_error(service_process: ServiceProcess) -> None:
    code, output = _run(service_process.url, "--max-p99-ms", "10000", "--max-error-ratio", "0")
    assert code == 0, output
    assert "PASSED" in output and "failures 0 " in output
    assert _requests(output) >= 4
    for endpoint in ("/v1/models/[model]/predict", "/v2/models/[model]/infer"):
        match = re.search(re.escape(endpoint) + r": (\d+) requests, 0 failures", output)
        assert match and int(match.group(1)) > 0, output


def test_impossible_latency_threshold_fails(service_process: ServiceProcess) -> None:
    code, output = _run(service_process.url, "--max-p99-ms", "0.001", "--max-error-ratio", "1")
    assert code == 1, output
    assert "FAILED: p99" in output and _requests(output) > 0


def test_errors_break_the_error_threshold(service_process: ServiceProcess) -> None:
    env = {
        "WATCHTIME_LOAD_MODEL": "no-such-model",
        "WATCHTIME_LOAD_MODEL_DIR": str(ROOT / "models" / "egmn" / "1"),
    }
    code, output = _run(
        service_process.url, "--max-p99-ms", "10000", "--max-error-ratio", "0.5", env=env
    )
    assert code == 1, output
    assert "FAILED: error ratio 1.0000" in output


def test_unreachable_server_fails() -> None:
    code, output = _run("http://127.0.0.1:9", "--max-p99-ms", "10000", "--max-error-ratio", "0.5")
    assert code != 0, output


def _healthcheck_command() -> list[str]:
    """The exec-form HEALTHCHECK command of the image's final stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("HEALTHCHECK")]
    command: list[str] = json.loads(lines[-1][lines[-1].index("CMD") + 3 :])
    return command


def test_image_healthcheck_probes_a_real_server(service_process: ServiceProcess) -> None:
    command = _healthcheck_command()
    assert command[:2] == ["python", "-c"]
    up = subprocess.run(
        [sys.executable, *command[1:]],
        env={**os.environ, "WATCHTIME_PORT": str(service_process.port)},
        capture_output=True,
        timeout=30,
    )
    assert up.returncode == 0, up.stderr
    down = subprocess.run(
        [sys.executable, *command[1:]],
        env={**os.environ, "WATCHTIME_PORT": str(free_port())},
        capture_output=True,
        timeout=30,
    )
    assert down.returncode != 0
