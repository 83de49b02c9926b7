"""The service's cost per row without HTTP: its worker thread's path against bare onnxruntime.

Throughput over HTTP mixes the service's own work with the network stack and wrk sharing the
cores; in one process, with one onnxruntime thread, CPU time is the whole cost, so the ratio
says what the service adds to the model itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loadtest.payloads import INTERVALS, QUANTILES, HeldOutRows
from loadtest.scenarios import MODEL_DIR
from service.runtime.model import ModelRuntime, SessionConfig
from service.runtime.prediction import PredictOptions


def rows_per_cpu_second(rows: int, seconds: float) -> tuple[float, float]:
    """Rows per CPU-second of bare onnxruntime on encoded rows, and of the service's path.

    Both run batches of the same ``rows`` held-out rows in a loop for ``seconds`` of CPU
    time. The service's path is what its worker thread does with a batch: encode the raw
    columns, run, post-process.
    """
    model = ModelRuntime.load(MODEL_DIR, SessionConfig(1, 1))
    columns = HeldOutRows(model.sources, model.source_kinds, rows).columns
    options = PredictOptions.create(QUANTILES, INTERVALS)
    tensors = model.encode(columns)
    names = model.output_names

    def loop(step: Callable[[], object]) -> float:
        for _ in range(3):
            step()
        done, started = 0, time.process_time()
        while (spent := time.process_time() - started) < seconds:
            step()
            done += rows
        return done / spent

    bare = loop(lambda: model.session.run(names, tensors))
    served = loop(lambda: model.predict(columns, options))
    return bare, served
