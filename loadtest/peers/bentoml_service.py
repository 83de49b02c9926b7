"""Peer: BentoML 1.4, as its documentation shows a service (``@bentoml.service``).

One worker, the default thread settings, a sync API whose two ``np.ndarray`` parameters
BentoML decodes and whose dict of lists it encodes. BentoML's adaptive batching takes
batchable APIs with exactly one parameter, so this two-tensor API runs unbatched.

Request:  {"categorical": [[36 ints], ...], "numeric": [[9 floats], ...]}
Response: one list per output of :mod:`egm_numpy`, one value per row.

usage: python -m loadtest.peers.bentoml_service MODEL.onnx --port PORT [--intra-op 2]
       (execs ``bentoml serve`` on this module with the model path in the environment)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bentoml
import numpy as np

from loadtest.peers import egm_numpy

# bentoml serve imports the service by its module name from a working directory: the one
# that holds the loadtest package, so that this module's package import resolves there too.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@bentoml.service(workers=1)
class EGMN:
    def __init__(self) -> None:
        self.session = egm_numpy.load_session(
            os.environ["PEER_ONNX"], int(os.environ.get("PEER_INTRA_OP", "2"))
        )

    @bentoml.api(route="/predict")
    def predict(self, categorical: np.ndarray, numeric: np.ndarray) -> dict[str, list[float]]:
        result = egm_numpy.predict(
            self.session,
            np.ascontiguousarray(categorical, dtype=np.int64),
            np.ascontiguousarray(numeric, dtype=np.float32),
        )
        return {k: v.tolist() for k, v in result.items()}

    @bentoml.api(route="/healthz")
    def healthz(self) -> dict[str, bool]:
        return {"live": True}


if __name__ == "__main__":
    args = egm_numpy.server_arguments()
    env = dict(
        os.environ,
        PEER_ONNX=os.path.abspath(args.onnx),
        PEER_INTRA_OP=str(args.intra_op),
        BENTOML_DO_NOT_TRACK="true",
    )
    command = [sys.executable, "-m", "bentoml", "serve", "loadtest.peers.bentoml_service:EGMN"]
    command += ["--host", "127.0.0.1", "--port", str(args.port)]
    command += ["--working-dir", str(PACKAGE_ROOT)]
    os.execvpe(command[0], command, env)
