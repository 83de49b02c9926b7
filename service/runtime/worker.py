"""The threads of a process that do a batch's work: numpy on one, onnxruntime on another.

numpy holds the GIL for small arrays, and several threads making small numpy calls are
slower than one, so all encoding and post-processing of every model runs on one thread;
onnxruntime releases the GIL and waits on a second.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


class WorkerThread:
    """The one thread of a process that encodes, runs and post-processes batches.

    Started on first use, and again after a shutdown (an app whose lifespan is entered
    twice, as test clients do).
    """

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._runner: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The thread of all numpy work: encoding and post-processing."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="watchtime-batch")
        return self._executor

    @property
    def runner(self) -> ThreadPoolExecutor:
        """The thread that waits on onnxruntime (which runs without the GIL)."""
        if self._runner is None:
            self._runner = ThreadPoolExecutor(1, thread_name_prefix="watchtime-ort")
        return self._runner

    def shutdown(self, wait: bool) -> None:
        executor, self._executor = self._executor, None
        runner, self._runner = self._runner, None
        for pool in (executor, runner):
            if pool is not None:
                pool.shutdown(wait=wait)
