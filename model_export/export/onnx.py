"""The ONNX graph of a trained run: the module that is served, traced to ONNX.

The graph takes the two tensors ``service.runtime.features`` builds (``categorical`` int64,
``numeric`` float32, dynamic batch) and emits its family's parameters in seconds (EGMN: the
EGM's, with the calibration already applied; a baseline: its own family's), so the service
serves exactly that distribution and ``return_params`` returns exactly those numbers. Every
output has the batch as its first axis.
"""

from __future__ import annotations

import io
import warnings
from typing import Protocol

import torch

from model_export.data.features import CATEGORICAL_INPUT, NUMERIC_INPUT, FittedFeatures

OPSET = 17


class ServingModule(Protocol):
    """What the exporter needs: a torch module (categorical, numeric) -> family parameters."""

    def __call__(
        self, categorical: torch.Tensor, numeric: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """The family's parameters in seconds, one tensor per output name."""
        ...

    def eval(self) -> torch.nn.Module:
        """Inference mode (BatchNorm statistics, no dropout)."""
        ...

    def output_names(self) -> list[str]:
        """ONNX output names, equal to the family's parameter names."""
        ...


def onnx_bytes(serving: ServingModule, fitted: FittedFeatures) -> bytes:
    """Serialise the serving graph; the batch dimension is dynamic."""
    module = serving.eval()
    n_cat = len(fitted.inputs[0].columns)
    example = (
        torch.zeros((2, n_cat), dtype=torch.int64),
        torch.zeros((2, fitted.numeric_width), dtype=torch.float32),
    )
    outputs = serving.output_names()
    dynamic = {name: {0: "batch"} for name in [CATEGORICAL_INPUT, NUMERIC_INPUT, *outputs]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is the one that needs no extra package; it warns that a
        # newer exporter exists.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            buffer,
            dynamo=False,
            input_names=[CATEGORICAL_INPUT, NUMERIC_INPUT],
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    return buffer.getvalue()
