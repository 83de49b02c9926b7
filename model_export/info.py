"""``python -m model_export info MODEL_DIR``: what a model directory is, from its manifest.

For someone who receives a model directory and wants to know what they got before serving
it: which family and settings, trained on which days, how it scored on the test day, whether
``model.onnx`` is the file the manifest was written for, and whose data it was trained on.
Everything is read from ``manifest.json`` (and the graph's bytes, for the sha256 check):
no torch, no data, so it answers in well under a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

from service.manifest import Manifest, sha256_file

HEADLINE = (
    ("mae_point", "MAE point (s)"),
    ("xauc_point", "XAUC point"),
    ("mae_median", "MAE median (s)"),
    ("nll_positive", "NLL y>0"),
    ("crps", "CRPS (s)"),
    ("coverage_0.1", "coverage 10%"),
    ("coverage_0.5", "coverage 50%"),
    ("coverage_0.9", "coverage 90%"),
    ("quick_skip_auc", "skip AUC"),
    ("quick_skip_brier", "skip Brier"),
)
"""The test-day figures shown, in the report's order; the manifest may carry more."""


def _date(value: int | None) -> str:
    if value is None:
        return "-"
    text = str(value)
    return f"{text[:4]}-{text[4:6]}-{text[6:]}" if len(text) == 8 else text


def _settings(extras: dict[str, float | str | list[float]]) -> list[str]:
    """The training settings (``train_config``, a dict's repr) and the other scalar extras;
    the long per-component vectors (calibration, bucket edges) are only counted."""
    lines = []
    config = extras.get("train_config")
    if isinstance(config, str):
        try:
            values = ast.literal_eval(config)
        except (ValueError, SyntaxError):
            values = None
        if isinstance(values, dict):
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in values.items()))
        else:
            lines.append(f"  {config}")
    for key, value in extras.items():
        if key == "train_config":
            continue
        if isinstance(value, list):
            lines.append(f"  {key}: {len(value)} values")
        elif isinstance(value, float):
            lines.append(f"  {key}: {value:g}")
        else:
            lines.append(f"  {key}: {value}")
    return lines


def describe(model_dir: Path) -> str:
    """The text ``info`` prints for a model directory."""
    manifest = Manifest.read(model_dir / "manifest.json")
    window = manifest.training_window
    lines = [
        f"{manifest.name}/{manifest.version}: {manifest.description or '(no description)'}",
        f"family: {manifest.family} (outputs: {', '.join(manifest.outputs)})",
        "training window: "
        f"{_date(window.train_dates[0] if window.train_dates else None)} to "
        f"{_date(window.train_dates[-1] if window.train_dates else None)} "
        f"({len(window.train_dates)} days, {window.rows_train:,} rows); validation "
        f"{_date(window.validation_date)} ({window.rows_validation:,} rows); test "
        f"{_date(window.test_date)} ({window.rows_test:,} rows)",
        f"inputs: {len(manifest.features)} features into "
        + ", ".join(f"{t.name} ({t.dtype}, {len(t.columns)})" for t in manifest.inputs),
    ]
    if manifest.history is not None:
        history = manifest.history
        lines.append(
            f"history tables: {history.file}, views up to {_date(history.cutoff_date)} ("
            + ", ".join(f"{name} {t.rows:,} ids" for name, t in history.tables.items())
            + ")"
        )
    lines += ["settings:", *_settings(manifest.extras)]
    evaluation = manifest.evaluation
    if evaluation is None:
        lines.append("test-day figures: none in the manifest")
    else:
        lines.append(
            f"test-day figures ({evaluation.split} {_date(evaluation.date)}, "
            f"{evaluation.rows:,} rows):"
        )
        for key, label in HEADLINE:
            if key in evaluation.metrics:
                lines.append(f"  {label:<15} {evaluation.metrics[key]:.4f}")
        if evaluation.references:
            lines.append("  references in the manifest: " + ", ".join(evaluation.references))
    onnx = model_dir / "model.onnx"
    if onnx.is_file():
        actual = sha256_file(onnx)
        verdict = (
            "matches model.onnx"
            if actual == manifest.onnx_sha256
            else (f"DOES NOT match model.onnx ({actual})")
        )
        lines.append(f"model.onnx: {onnx.stat().st_size / 1e6:.2f} MB")
    else:
        verdict = "model.onnx is missing"
    lines.append(f"sha256: {manifest.onnx_sha256} ({verdict})")
    attribution = manifest.attribution
    lines += [
        f"data: {attribution.dataset}, {attribution.license} ({attribution.license_url})",
        f"  source: {attribution.source_url}",
        f"  cite: {attribution.citation}",
    ]
    return "\n".join(lines)
