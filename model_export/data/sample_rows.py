"""A few real rows of the held-out test day, shipped in the service for the ``/inspect`` page.

The page lets a person pick a real candidate row and see its predicted distribution; the
service cannot read the data files (it ships without pandas and without ``data/``), so this
module writes a small JSON file into the ``service`` package: ``SAMPLE_ROWS`` rows drawn at
random (fixed seed) from the test day, with every raw column any shipped model reads, the
observed watch time, and the KuaiRand attribution and licence (CC BY-SA 4.0) that any
redistribution of its rows must carry. ``python -m model_export sample-rows`` rewrites it;
a test checks that the shipped file is what this code writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from model_export.data.attribution import KUAIRAND
from model_export.data.kuairand import DEFAULT_DATA_DIR, LABEL, load_joined, split_by_day
from service.manifest import Manifest
from service.versions import version_dirs

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_ROWS_PATH = ROOT / "service" / "protocol" / "web" / "test_day_rows.json"
SAMPLE_ROWS = 50
SEED = 0


def model_columns(models_dir: Path) -> list[str]:
    """Every raw column some shipped model version reads, sorted."""
    columns: set[str] = set()
    for model_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        for version in version_dirs(model_dir):
            columns.update(Manifest.read(version / "manifest.json").source_columns())
    return sorted(columns)


def _plain(value: Any) -> Any:
    """A JSON value as a client sends it: None for missing, Python ints, floats, strings."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def sample_rows(
    data_dir: Path = DEFAULT_DATA_DIR, models_dir: Path = ROOT / "models"
) -> dict[str, Any]:
    """The document ``/v1/inspect/rows`` serves."""
    split = split_by_day(load_joined(data_dir))
    picked = split.test.sample(SAMPLE_ROWS, random_state=SEED).sort_index()
    columns = model_columns(models_dir)
    values = picked[columns].astype(object).to_numpy()
    rows = [
        {name: _plain(v) for name, v in zip(columns, row, strict=True)} for row in values.tolist()
    ]
    return {
        "dataset": KUAIRAND.dataset,
        "license": KUAIRAND.license,
        "license_url": KUAIRAND.license_url,
        "source_url": KUAIRAND.source_url,
        "citation": KUAIRAND.citation,
        "notice": (
            f"{SAMPLE_ROWS} rows of the held-out test day ({split.test_date}), drawn at random "
            f"(seed {SEED}) from the KuaiRand logs joined with the user and video tables, as a "
            "client would send them; shared under the dataset's licence, CC BY-SA 4.0. "
            "watch_time_s is the observed watch time, never a model input."
        ),
        "test_date": split.test_date,
        "columns": columns,
        "rows": rows,
        "watch_time_s": [float(x) for x in picked[LABEL]],
    }


def render(doc: dict[str, Any]) -> str:
    """The file's text: stable, one row per line, so that a change reads as a diff."""
    head = {k: v for k, v in doc.items() if k not in ("rows", "watch_time_s")}
    lines = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
    rows = ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in doc["rows"])
    labels = json.dumps(doc["watch_time_s"])
    return f'{lines},\n "rows": [\n{rows}\n ],\n "watch_time_s": {labels}\n}}\n'


def write_sample_rows(
    data_dir: Path = DEFAULT_DATA_DIR,
    models_dir: Path = ROOT / "models",
    path: Path = SAMPLE_ROWS_PATH,
) -> Path:
    path.write_text(render(sample_rows(data_dir, models_dir)), encoding="utf-8")
    return path
