"""A model directory: ``model.onnx``, ``manifest.json`` (the service's own schema) and the
data attribution, the three files the service loads and serves; plus ``history.npz``, the
frozen history tables, for a model with history features."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from model_export.data.attribution import KUAIRAND, LICENSE_TEXT
from model_export.data.features import FittedFeatures
from model_export.export.onnx import ServingModule, onnx_bytes
from service.manifest import (
    Attribution,
    Evaluation,
    HistoryTables,
    LookupTable,
    Manifest,
    TrainingWindow,
    sha256_file,
)

HISTORY_FILE = "history.npz"


def write_history(out_dir: Path, fitted: FittedFeatures) -> HistoryTables | None:
    """The frozen history tables as ``history.npz`` and the manifest block naming them."""
    if fitted.history is None:
        return None
    path = out_dir / HISTORY_FILE
    fitted.history.tables.save(path)
    return HistoryTables(
        file=HISTORY_FILE,
        sha256=sha256_file(path),
        cutoff_date=fitted.history.cutoff_date,
        prior_views=fitted.history.prior_views,
        tables={
            name: LookupTable(rows=int(table.ids.size), statistics=list(table.columns))
            for name, table in fitted.history.tables.tables.items()
        },
    )


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
    point: Literal["model", "median"] = "model",
) -> Manifest:
    """Write model.onnx, manifest.json (through the shared schema) and ATTRIBUTION.txt, and
    history.npz when the features read history tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    history = write_history(out_dir, fitted)
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
        history=history,
        point=point,
    )
    manifest.write(out_dir / "manifest.json")
    (out_dir / "ATTRIBUTION.txt").write_text(license_text, encoding="utf-8")
    return manifest
