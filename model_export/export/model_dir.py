"""A model directory: ``model.onnx``, ``manifest.json`` (the service's own schema) and the
data attribution, the three files the service loads and serves."""

from __future__ import annotations

from pathlib import Path

from model_export.data.attribution import KUAIRAND, LICENSE_TEXT
from model_export.data.features import FittedFeatures
from model_export.export.onnx import ServingModule, onnx_bytes
from service.manifest import Attribution, Evaluation, Manifest, TrainingWindow, sha256_file


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
