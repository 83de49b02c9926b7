"""The seed spread of every figure: each served model trained again with other seeds.

One training run is one draw: initialisation and batch order alone move a figure by more
than some of the gaps between models. ``python -m model_export seeds`` trains every model of
the report (EGMN with the served configuration, and each served baseline) with seeds 1 and
2 (the shipped model directories are seed 0), exports each run to
``runs/seeds/<seed>/<name>/1`` and scores it through the serving path on the test day,
exactly as the report scores the shipped directory. The figures go to ``reports/seeds.json``
(kept in git, a few kB) after every model, so an interrupted run loses one model at most.

The report reads that file: beside each figure it prints half the range of the seeds'
values, and a difference inside the ranges is called a tie (:func:`spread`, :func:`tie`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from model_export.data.kuairand import Split, labels
from model_export.evaluation.scoring import duration_group, score, score_exported

SEEDS_FILE = "seeds.json"
DEFAULT_SEEDS = (1, 2)
"""Seeds trained beside the shipped seed 0."""

Figures = dict[str, object]
"""One run's figures: ``overall`` (metric -> value), ``by_duration`` (group -> metric ->
value) and ``train_seconds`` (set by the ``seeds`` command, which times the run)."""


def load(path: Path) -> dict[str, dict[str, Figures]]:
    """``{model: {seed: figures}}`` from ``reports/seeds.json``; empty when it is absent."""
    if not path.exists():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    runs = doc.get("runs", {})
    return {str(m): {str(s): dict(f) for s, f in seeds.items()} for m, seeds in runs.items()}


def save(path: Path, runs: Mapping[str, Mapping[str, Figures]], test_date: int | None) -> None:
    """Write the file atomically (a crash mid-write keeps the previous one)."""
    doc = {
        "test_date": test_date,
        "note": "Test-day figures of each model trained with other seeds than the shipped "
        "seed 0; written by `python -m model_export seeds`, read by the report.",
        "runs": {m: dict(sorted(s.items())) for m, s in sorted(runs.items())},
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _finite(value: object) -> float | None:
    if isinstance(value, (int, float)) and np.isfinite(value):
        return round(float(value), 6)
    return None


def figures_of(model_dir: Path, split: Split) -> Figures:
    """A model directory's test-day figures, overall and by duration group."""
    scored = score_exported(model_dir, split.test)
    y = labels(split.test)
    score(scored, y, duration_group(split.test["duration_ms"].to_numpy(dtype=np.float64)))
    return {
        "overall": {k: _finite(v) for k, v in scored.overall.items()},
        "by_duration": {
            g: {k: _finite(v) for k, v in metrics.items()} for g, metrics in scored.groups.items()
        },
    }


def values(
    shipped: float | None, runs: Mapping[str, Figures], key: str, group: str | None = None
) -> list[float]:
    """The shipped figure and the same figure of every other seed's run (finite ones)."""
    out = [] if shipped is None or not np.isfinite(shipped) else [float(shipped)]
    for figures in runs.values():
        table = figures.get("overall") if group is None else figures.get("by_duration", {})
        if group is not None and isinstance(table, dict):
            table = table.get(group)
        value = table.get(key) if isinstance(table, dict) else None
        if isinstance(value, (int, float)) and np.isfinite(value):
            out.append(float(value))
    return out


def spread(samples: Sequence[float]) -> float | None:
    """Half the range of a figure over its seeds; ``None`` with fewer than two seeds."""
    if len(samples) < 2:
        return None
    return (max(samples) - min(samples)) / 2.0


def tie(a: Sequence[float], b: Sequence[float], distance: Callable[[float], float]) -> bool:
    """Whether two models' seed ranges overlap once each value is mapped by ``distance``
    (the identity, or the distance of a coverage to its level): then neither is ahead
    beyond the seed noise. With one seed each, only equal values tie."""
    da, db = [distance(v) for v in a], [distance(v) for v in b]
    if not da or not db:
        return False
    return min(da) <= max(db) and min(db) <= max(da)
