"""What the benchmark measures: the servers, the loads put on them and for how long.

Every server answers the same numbers for the same held-out rows; a load is one route, one
prebuilt body and a number of connections, under ``wrk``. The durations are one set for the
whole run, so that ``--quick`` shortens every load alike.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from loadtest.paths import MODELS
from loadtest.payloads import BodyName
from loadtest.servers import Server
from service.runtime.repository import latest_version_dir

MODEL = "egmn"
MODEL_DIR = latest_version_dir(MODELS, MODEL)  # the EGMN the service serves
#: rows of the large requests, and of the agreement check
ROWS = 256
#: the request rate of the latency row, as a fraction of the saturated one
LATENCY_FRACTION = 0.7


@dataclass(frozen=True)
class Durations:
    """Seconds of each kind of run."""

    warm: float
    load: float
    #: the two calibration runs of the latency row
    probe: float
    #: py-spy, started after the warm-up and stopped before the load ends
    profile: float
    #: each in-process loop
    in_process: float


FULL = Durations(warm=3.0, load=15.0, probe=4.0, profile=13.0, in_process=5.0)
#: a smoke run of every scenario: about 2 s of load each
QUICK = Durations(warm=1.0, load=2.0, probe=2.0, profile=1.0, in_process=1.0)


@dataclass(frozen=True)
class Scenario:
    """One wrk load: a route, a body of the run, the rows it holds, the connections."""

    path: str
    body: BodyName
    rows: int
    connections: int


PEER_256 = Scenario("/predict", "peer256", ROWS, connections=8)
PEER_1 = Scenario("/predict", "peer1", 1, connections=64)
NATIVE_256 = Scenario("/v1/predict", "native256", ROWS, connections=8)
NATIVE_1 = Scenario("/v1/predict", "native1", 1, connections=64)
#: the 256 rows with only the request-time columns: the service looks up the rest
IDS_256 = Scenario("/v1/predict", "ids256", ROWS, connections=8)
V2_256 = Scenario(f"/v2/models/{MODEL}/infer", "v2_256", ROWS, connections=8)


def peer_servers(python: str) -> list[Server]:
    """The peers, the tuned one first, each run by ``python`` (the peers' environment)."""
    onnx = str(MODEL_DIR / "model.onnx")
    common = ["--port", "{port}", "--intra-op", "2"]
    return [
        Server(
            "FastAPI tuned by hand (`loadtest/peers/fastapi_tuned.py`)",
            [python, "-m", "loadtest.peers.fastapi_tuned", onnx, *common],
        ),
        Server(
            "BentoML 1.4 (`loadtest/peers/bentoml_service.py`)",
            [python, "-m", "loadtest.peers.bentoml_service", onnx, *common],
            health="/readyz",
        ),
    ]


def service_server(workers: int, grpc_port: int = 0, env: dict[str, str] | None = None) -> Server:
    """This service with ``workers`` uvicorn workers (0: one per usable core); gRPC on
    ``grpc_port`` only when one is given (the default gRPC port may be taken); ``env`` adds
    settings (``WATCHTIME_...``) to the process's environment."""
    name = f"this service (`python -m service --workers {workers}`)"
    command = [sys.executable, "-m", "service", "--port", "{port}", "--workers", str(workers)]
    command += ["--grpc-port", str(grpc_port)]
    return Server(name, command, env=dict(env or {}), health="/readyz")
