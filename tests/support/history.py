"""A model directory with history features, for the tests of its tables (untrained weights:
what they test is the lookup, which does not care)."""

from __future__ import annotations

from pathlib import Path

import torch

from model_export.data.prepared import Prepared, training_window
from model_export.export.model_dir import write_model_dir
from model_export.models.egmn import EGMN, ServingEGMN


def write_history_model(prepared: Prepared, root: Path, name: str = "hist") -> Path:
    """``root/<name>/1``, exported from ``prepared`` (made with ``history=True``)."""
    fitted = prepared.fitted
    torch.manual_seed(0)
    net = EGMN(fitted.cardinalities, fitted.numeric_width, hidden=(16,), point_mass=True)
    out = root / name / "1"
    write_model_dir(
        out,
        ServingEGMN(net, None, 10.0).eval(),
        fitted,
        name=name,
        version="1",
        window=training_window(prepared.split),
        evaluation=None,
        extras={},
    )
    return out
