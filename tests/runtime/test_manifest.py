"""The manifest schema: strict, versioned, self-consistent, and the shipped one is valid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.manifest import Manifest, sha256_file, verify_onnx_sha256
from tests.support import ROOT

SHIPPED = ROOT / "models" / "egmn" / "1"


def _minimal() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": "toy",
        "version": "1",
        "family": "egm",
        "outputs": {"lambda": "lambda", "weights": "weights", "mu": "mu", "sigma": "sigma"},
        "inputs": [
            {"name": "categorical", "dtype": "int64", "columns": ["tag"]},
            {"name": "numeric", "dtype": "float32", "columns": ["d", "d__missing"]},
        ],
        "features": [
            {
                "kind": "categorical",
                "name": "tag",
                "source": "tag",
                "dtype": "string",
                "vocabulary": ["1", "2"],
                "min_count": 5,
                "cardinality": 4,
            },
            {
                "kind": "numeric",
                "name": "d",
                "source": "duration_ms",
                "log1p": True,
                "mean": 10.0,
                "std": 1.0,
                "missing_values": [0.0],
                "missing_indicator": True,
            },
        ],
        "training_window": {"train_dates": [20220425], "rows_train": 10},
        "onnx_sha256": "0" * 64,
        "attribution": {
            "dataset": "d",
            "license": "CC BY-SA 4.0",
            "license_url": "u",
            "source_url": "s",
            "citation": "c",
            "notice": "n",
        },
    }


def test_minimal_round_trip() -> None:
    m = Manifest.model_validate(_minimal())
    again = Manifest.model_validate_json(m.to_json())
    assert again == m
    assert m.quick_skip_threshold_s == 3.0
    assert m.source_columns() == ["tag", "duration_ms"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("surprise",), 1),
        (("schema_version",), 2),
        (("features", 0, "vocabulary"), ["2", "1"]),
        (("features", 0, "vocabulary"), [1, 2]),
        (("features", 0, "cardinality"), 3),
        (("features", 1, "std"), 0.0),
        (("inputs", 1, "columns"), ["d"]),
        (("inputs", 0, "dtype"), "float32"),
        (("onnx_sha256",), "abc"),
        (("attribution", "extra"), "x"),
    ],
)
def test_invalid_manifests_are_refused(path: tuple[Any, ...], value: Any) -> None:
    data = _minimal()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        Manifest.model_validate(data)


def test_sha256_check(tmp_path: Path) -> None:
    blob = tmp_path / "model.onnx"
    blob.write_bytes(b"not really a model")
    m = Manifest.model_validate({**_minimal(), "onnx_sha256": sha256_file(blob)})
    assert verify_onnx_sha256(m, blob)
    blob.write_bytes(b"tampered")
    assert not verify_onnx_sha256(m, blob)


def test_shipped_manifest_is_valid_and_matches_its_model() -> None:
    manifest = Manifest.read(SHIPPED / "manifest.json")
    assert manifest.family == "egm"
    assert set(manifest.outputs) == {"lambda", "weights", "mu", "sigma", "p0"}
    assert verify_onnx_sha256(manifest, SHIPPED / "model.onnx")
    assert manifest.attribution.license == "CC BY-SA 4.0"
    assert (SHIPPED / "ATTRIBUTION.txt").read_text().count("CC BY-SA 4.0") >= 1
    raw = json.loads((SHIPPED / "manifest.json").read_text())
    assert raw["schema_version"] == 1
    # Post-view feedback never feeds the model.
    feedback = {"is_click", "is_like", "long_view", "play_time_ms", "profile_stay_time"}
    assert feedback.isdisjoint(manifest.source_columns())
    size = (SHIPPED / "model.onnx").stat().st_size + (SHIPPED / "manifest.json").stat().st_size
    assert size < 8_000_000
