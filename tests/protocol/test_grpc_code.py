"""The committed gRPC code is what ``make grpc-code`` generates from the committed .proto with the
pinned grpcio-tools: nobody edited it by hand, and nobody changed the .proto without it.

Read as text, never imported: the test process may hold a client's own copy of the
``inference`` messages (Triton's), which one process cannot register twice.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from tests.support import ROOT

PACKAGE = Path("service/protocol/grpc")
PROTO = PACKAGE / "grpc_predict_v2.proto"
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")


def _pinned(name: str) -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for extra in project["project"]["optional-dependencies"].values():
        for requirement in extra:
            found = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==(\S+)", requirement)
            if found:
                return found.group(2)
    raise AssertionError(f"{name} is not pinned in pyproject.toml")


def test_recorded_generator_is_the_pinned_one() -> None:
    stubs = (ROOT / PACKAGE / "grpc_predict_v2_pb2_grpc.py").read_text()
    recorded = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", stubs)
    assert recorded, "no GRPC_GENERATED_VERSION in the generated stubs"
    assert recorded.group(1) == _pinned("grpcio-tools") == metadata.version("grpcio-tools")
    # grpcio at run time must be at least the generator's version (the stubs check it too)
    assert _pinned("grpcio") == recorded.group(1)


def test_committed_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I."]
        + [f"--{kind}_out={tmp_path}" for kind in ("python", "pyi", "grpc_python")]
        + [str(PROTO)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for name in GENERATED:
        fresh = (tmp_path / PACKAGE / name).read_text()
        committed = (ROOT / PACKAGE / name).read_text()
        assert committed == fresh, f"{PACKAGE / name} differs from `make grpc-code`'s output"
