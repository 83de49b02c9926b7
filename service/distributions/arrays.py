"""The array types the distribution code passes around: float64 values, float32 values (the
quantile search's cheap start), masks and row indices."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]


def gather_rows(values: FloatArray, index: IntArray) -> FloatArray:
    """``values[row, index[row, i]]`` with rows broadcast between (1, .) and (n, .)."""
    rows = max(values.shape[0], index.shape[0])
    v = np.broadcast_to(values, (rows, values.shape[1]))
    i = np.broadcast_to(index, (rows, index.shape[1]))
    return np.take_along_axis(v, i, axis=1)
