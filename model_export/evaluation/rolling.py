"""Rolling-origin check: does the ranking of models hold on other days than the test day?

One test day is one draw of the traffic. ``python -m model_export rolling`` moves the whole
split back by one day, then by two: with ``k`` days held back, the logs end ``k`` days
earlier, their last day is the test day, the day before it the validation day (early
stopping and calibration, as always) and every earlier day trains. Each model of the report
is fitted on each such split with the very settings ``make models`` uses (seed 0) and scored
on its test day through its served family. The figures go to ``reports/rolling.json`` after
every model, so an interrupted run loses one model at most; the evaluation report prints,
for each headline column, EGMN's rank on every test day.

Nothing here reads a later day than the fold's test day: the folds' test days (05-02, 05-03)
are training and validation days of the shipped models, never their test day.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from model_export.data.kuairand import Split, split_by_day
from model_export.evaluation.tables import HEADLINE

ROLLING_FILE = "rolling.json"
HELD_BACK = (1, 2)
"""Days cut from the end of the logs: each gives a split that ends one day earlier."""

RANKED = ("mae_point", "xauc_point", "nll_positive", "crps", "quick_skip_auc", "quick_skip_brier")
# (key, header, lower is better): the report's columns the ranking is read on.
COLUMNS = tuple(column for column in HEADLINE if column[0] in RANKED)

Folds = dict[str, dict[str, object]]
"""``{test_date: {"window": {...}, "models": {name: {metric: value}}}}``."""


def fold_split(joined: pd.DataFrame, held_back: int) -> Split:
    """The split of the logs without their last ``held_back`` days."""
    dates = sorted(int(d) for d in joined["date"].unique())
    if held_back < 0 or len(dates) - held_back < 3:
        raise ValueError(f"cannot hold back {held_back} of {len(dates)} days and keep three")
    last = dates[len(dates) - 1 - held_back]
    return split_by_day(joined[joined["date"].astype("int64") <= last].reset_index(drop=True))


def load(path: Path) -> Folds:
    """The recorded folds; empty when the file is absent."""
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("folds", {}))


def save(path: Path, folds: Mapping[str, Mapping[str, object]]) -> None:
    """Write the file atomically (a crash mid-write keeps the previous one)."""
    doc = {
        "note": "Test-day figures of every report model fitted on the logs without their last "
        "one or two days (seed 0); written by `python -m model_export rolling`.",
        "folds": {k: folds[k] for k in sorted(folds)},
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def kept(metrics: Mapping[str, float]) -> dict[str, float]:
    """The figures the file keeps: the ranking's columns and the coverage."""
    keys = [k for k, _, _ in COLUMNS] + ["coverage_0.1", "coverage_0.5", "coverage_0.9"]
    return {k: round(float(metrics[k]), 6) for k in keys if k in metrics}


def run_folds(
    joined: pd.DataFrame,
    names: Sequence[str],
    fit: Callable[[Split, str], Mapping[str, float]],
    path: Path,
    held_back: Sequence[int] = HELD_BACK,
    redo: bool = False,
    announce: Callable[[str], None] = print,
) -> Folds:
    """Fit and score every model on every fold, recording each as it ends."""
    folds = load(path)
    for k in held_back:
        split = fold_split(joined, k)
        key = str(split.test_date)
        fold = folds.setdefault(key, {})
        fold["window"] = {
            "train_dates": [split.train_dates[0], split.train_dates[-1]],
            "validation_date": split.validation_date,
            "test_date": split.test_date,
            "rows_test": len(split.test),
        }
        models = fold.setdefault("models", {})
        assert isinstance(models, dict)
        for name in names:
            if name in models and not redo:
                announce(f"{name}, test day {key}: already in {path}")
                continue
            announce(f"{name}, test day {key}")
            models[name] = kept(fit(split, name))
            save(path, folds)
    return folds


def by_day(folds: Mapping[str, Mapping[str, object]]) -> dict[str, Mapping[str, Any]]:
    """Each fold's figures, ``{test_date: {model: {metric: value}}}``, in date order."""
    out: dict[str, Mapping[str, Any]] = {}
    for day in sorted(folds):
        models = folds[day].get("models", {})
        assert isinstance(models, Mapping)
        out[day] = models
    return out


def _rank(figures: Mapping[str, Mapping[str, float]], key: str, lower: bool, name: str) -> str:
    """``name``'s place among the models having ``key``, as ``2/16``."""
    have = {m: f[key] for m, f in figures.items() if key in f}
    if name not in have:
        return "-"
    ordered = sorted(have, key=lambda m: have[m] if lower else -have[m])
    return f"{ordered.index(name) + 1}/{len(ordered)}"


def _best(figures: Mapping[str, Mapping[str, float]], key: str, lower: bool) -> str:
    have = {m: f[key] for m, f in figures.items() if key in f}
    if not have:
        return "-"
    best = min(have, key=lambda m: have[m] if lower else -have[m])
    return f"{best} {_shown(key, have[best])}"


def _shown(key: str, value: float) -> str:
    return f"{value:.3f}" if key.startswith("mae") or key == "crps" else f"{value:.4f}"


def rolling_table(
    folds: Mapping[str, Mapping[str, object]],
    test_day: tuple[str, Mapping[str, Mapping[str, float]]],
    name: str = "egmn",
) -> list[str]:
    """Markdown: per column (row) and test day (column), ``name``'s rank among the models,
    its figure and the best model's."""
    days = [*by_day(folds).items(), test_day]
    lines = [
        "| column | " + " | ".join(f"test day {day} ({len(f)} models)" for day, f in days) + " |",
        "|---|" + "---|" * len(days),
    ]
    for key, header, lower in COLUMNS:
        cells = []
        for _, figures in days:
            own = figures.get(name, {}).get(key)
            if own is None:
                cells.append("-")
                continue
            rank = _rank(figures, key, lower, name)
            cell = f"{rank}: {_shown(key, own)}"
            if not rank.startswith("1/"):
                cell += f" (best {_best(figures, key, lower)})"
            cells.append(cell)
        lines.append(f"| {header} | " + " | ".join(cells) + " |")
    return lines
