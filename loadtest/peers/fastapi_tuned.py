"""Peer: FastAPI tuned by hand, the way a team writes it when it cares about speed.

An async route reads the raw body; orjson decodes the encoded tensors straight into numpy;
decoding, onnxruntime and post-processing run on one executor thread (so onnxruntime's own
threads have the cores); orjson encodes the answer. uvicorn with uvloop and httptools, one
worker, no access log. No batching across requests.

Request:  {"categorical": [[36 ints], ...], "numeric": [[9 floats], ...]}
Response: one list per output of :mod:`egm_numpy`, one value per row.

usage: python -m loadtest.peers.fastapi_tuned MODEL.onnx --port PORT [--intra-op 2]
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

from loadtest.peers import egm_numpy

app = FastAPI()
state: dict[str, object] = {}
executor = ThreadPoolExecutor(1)


def work(body: bytes) -> bytes:
    doc = orjson.loads(body)
    categorical = np.asarray(doc["categorical"], dtype=np.int64)
    numeric = np.asarray(doc["numeric"], dtype=np.float32)
    result = egm_numpy.predict(state["session"], categorical, numeric)  # type: ignore[arg-type]
    return orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)


@app.post("/predict")
async def predict(request: Request) -> Response:
    body = await request.body()
    out = await asyncio.get_running_loop().run_in_executor(executor, work, body)
    return Response(content=out, media_type="application/json")


@app.get("/healthz")
async def healthz() -> Response:
    return Response(content=b'{"live":true}', media_type="application/json")


if __name__ == "__main__":
    args = egm_numpy.server_arguments()
    state["session"] = egm_numpy.load_session(args.onnx, args.intra_op)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, access_log=False, loop="uvloop", http="httptools"
    )
