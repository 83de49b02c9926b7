"""Scoring an exported model directory the way the service does: no torch involved.

manifest -> ``service.runtime.features`` -> onnxruntime -> ``service.distributions`` (the
family the manifest names). Used by
``evaluate`` and by the tests, so an exported directory is judged on exactly what is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.distributions import Distribution, get_family
from service.manifest import Manifest, verify_onnx_sha256
from service.runtime.features import encode_features


class ExportedModel:
    """A loaded model directory: its manifest and an onnxruntime session."""

    def __init__(self, model_dir: Path) -> None:
        self.manifest = Manifest.read(model_dir / "manifest.json")
        model_path = model_dir / "model.onnx"
        if not verify_onnx_sha256(self.manifest, model_path):
            raise ValueError(f"{model_path}: sha256 differs from the manifest's")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )

    def params(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Family parameters (float64, seconds) for raw request columns."""
        inputs = encode_features(self.manifest, columns)
        names = list(self.manifest.outputs.values())
        outs = self.session.run(names, inputs)
        return {
            param: np.asarray(out, dtype=np.float64)
            for param, out in zip(self.manifest.outputs, outs, strict=True)
        }

    def distribution(self, columns: Mapping[str, np.ndarray]) -> Distribution:
        """The served distribution of each row, in the manifest's family."""
        return get_family(self.manifest.family).from_params(self.params(columns))
