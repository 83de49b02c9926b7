"""ONNX export and the model directory (model.onnx + manifest.json + attribution).

The graph takes the two tensors ``service.runtime.features`` builds (``categorical`` int64,
``numeric`` float32, dynamic batch) and emits its family's parameters in seconds (EGMN: the
EGM's, with the calibration already applied; a baseline: its own family's), so the service
serves exactly that distribution and ``return_params`` returns exactly those numbers. Every
output has the batch as its first axis.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Protocol

import torch

from model_export.attribution import KUAIRAND, LICENSE_TEXT
from model_export.features import CATEGORICAL_INPUT, NUMERIC_INPUT, FittedFeatures
from service.manifest import Attribution, Evaluation, Manifest, TrainingWindow, sha256_file

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


def write_model_dir(
    out_dir: Path,
    serving: ServingModule,
    fitted: FittedFeatures,
    *,
    name: str,
    version: str,
    window: TrainingWindow,
    evaluation: Evaluation | None,
    extras: dict[str, float | str | list[float]],
    description: str = "",
    attribution: Attribution = KUAIRAND,
    license_text: str = LICENSE_TEXT,
    family: str = "egm",
) -> Manifest:
    """Write model.onnx, manifest.json (through the shared schema) and ATTRIBUTION.txt."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.onnx"
    model_path.write_bytes(onnx_bytes(serving, fitted))
    outputs = serving.output_names()
    manifest = Manifest(
        name=name,
        version=version,
        family=family,
        description=description,
        outputs={param: param for param in outputs},
        inputs=fitted.inputs,
        features=fitted.features,
        quick_skip_threshold_s=3.0,
        training_window=window,
        evaluation=evaluation,
        extras=extras,
        onnx_sha256=sha256_file(model_path),
        attribution=attribution,
    )
    manifest.write(out_dir / "manifest.json")
    (out_dir / "ATTRIBUTION.txt").write_text(license_text, encoding="utf-8")
    return manifest
