"""What each model costs: training time (wall and CPU), ONNX size and ONNX rows/s.

These figures depend on the machine and on whatever else runs on it (a second job on the two
cores moves a training time by a factor of 2 to 5), so they are kept out of the files a
rebuild must reproduce byte for byte (the manifests, ``reports/evaluation.{md,json}``,
``reports/egmn.md``). ``build-all`` records each run's timings in ``runs/costs.json``
(untracked, :class:`Record`); ``python -m model_export costs`` reads that record, measures
each graph's speed on this machine and writes the tracked ``reports/costs.md`` and
``costs.json``, only when asked (:func:`write_costs`).

Importing this module costs no torch: the build records timings through it and the command
line's checks must stay fast.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_export.data.kuairand import Split

RECORD = "costs.json"
"""Under the runs directory: the last build's timings."""

COSTS_TEXT = """\
- train (s): wall time of training and post-fitting (EGMN's calibration, VR's spread) in the
  build, torch on 2 threads of a 2-core machine that another job may share (GR and EGMN
  version 2 on one thread); train CPU (s): the CPU time of the same work. Both come from one
  build and move by a factor of 2 to 5 between builds with whatever else runs on the machine
  (torch's threads spin while they wait, so even CPU time grows): read them as orders of
  magnitude.
- ONNX MB: the size of `model.onnx` (the same on every machine).
- ONNX rows/s: the exported graph alone in onnxruntime, one thread, batches of 1024 rows, best
  of 3 passes over the test day, measured when this file was written; features and the
  family's post-processor are not included.
"""


class Record:
    """``runs/costs.json``: the timings of the runs of the last build, written as it goes
    (an interrupted build keeps those of the runs that finished)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        """The record, or an empty one when no build has written it."""
        if not self.path.is_file():
            return {"build": {}, "runs": {}}
        doc = json.loads(self.path.read_text(encoding="utf-8"))
        return {"build": dict(doc.get("build", {})), "runs": dict(doc.get("runs", {}))}

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.path)

    def start_build(self) -> None:
        """A new build: its date and machine; runs of an earlier build are kept until this
        one trains them again."""
        doc = self.load()
        doc["build"] = {
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        }
        self._save(doc)

    def run(self, key: str, train_seconds: float, cpu_seconds: float, seconds: float) -> None:
        """One run's timings: training and post-fits (wall, CPU), and with its test-day
        scoring (wall)."""
        doc = self.load()
        doc["runs"][key] = {
            "train_seconds": round(train_seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1),
            "seconds": round(seconds, 1),
        }
        self._save(doc)

    def finish_build(self, seconds: float) -> None:
        """The whole build's wall time."""
        doc = self.load()
        doc["build"]["seconds"] = round(seconds, 1)
        self._save(doc)


def _measure(model_dir: Path, split: Split) -> float:
    """Rows per second of one graph on the test day (heavy imports only here)."""
    from model_export.data.kuairand import raw_columns
    from model_export.evaluation.scoring import onnx_rows_per_s
    from model_export.evaluation.served import load_served

    model = load_served(model_dir)
    columns = raw_columns(split.test, model.manifest.source_columns())
    return onnx_rows_per_s(model_dir, model.encode(columns))


def _fmt(value: object, digits: int = 0) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:,.{digits}f}"


def write_costs(reports_dir: Path, models_dir: Path, split: Split, record: dict[str, Any]) -> Path:
    """reports/costs.md and costs.json; returns the markdown path."""
    from model_export.evaluation.report import REPORT_ORDER
    from service.manifest import Manifest
    from service.versions import version_dirs

    rows: dict[str, dict[str, Any]] = {}
    for name in REPORT_ORDER:
        for model_dir in version_dirs(models_dir / name):
            if not (model_dir / "manifest.json").is_file():
                continue
            key = f"{name}/{model_dir.name}"
            timings = record["runs"].get(key, {})
            rows[key] = {
                "family": Manifest.read(model_dir / "manifest.json").family,
                "train_seconds": timings.get("train_seconds"),
                "train_cpu_seconds": timings.get("train_cpu_seconds"),
                "onnx_mb": round((model_dir / "model.onnx").stat().st_size / 1e6, 3),
                "onnx_rows_per_s": round(_measure(model_dir, split)),
            }
    for key, timings in record["runs"].items():  # runs with no directory of their own
        if key not in rows and key.split("/")[0] in REPORT_ORDER:
            rows[key] = {
                "family": None,
                "train_seconds": timings.get("train_seconds"),
                "train_cpu_seconds": timings.get("train_cpu_seconds"),
                "onnx_mb": None,
                "onnx_rows_per_s": None,
            }
    build = record.get("build", {})
    date = dt.datetime.now(dt.UTC).date().isoformat()
    load = [round(v, 2) for v in os.getloadavg()]
    measured = {"date": date, "cpu_count": os.cpu_count(), "load_average": load}
    reports_dir.mkdir(parents=True, exist_ok=True)
    doc = {"build": build, "onnx_measured": measured, "models": rows}
    (reports_dir / "costs.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    header = ["model", "family", "train (s)", "train CPU (s)", "ONNX MB", "ONNX rows/s"]
    lines = [
        "# What each model costs: training time, ONNX size and speed",
        "",
        "Written by `python -m model_export costs`, only when asked: these figures depend on",
        "the machine and its load, so `make models` keeps them out of the manifests and of",
        "[evaluation.md](evaluation.md), which a rebuild reproduces byte for byte. Figures:",
        "`costs.json`.",
        "",
        _build_text(build),
        f"ONNX speed measured {date} on {os.cpu_count()} cores (load average "
        f"{', '.join(str(v) for v in load)}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for key, row in rows.items():
        cells = [
            key,
            row["family"] or "-",
            _fmt(row["train_seconds"]),
            _fmt(row["train_cpu_seconds"]),
            _fmt(row["onnx_mb"], 2),
            _fmt(row["onnx_rows_per_s"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", COSTS_TEXT]
    path = reports_dir / "costs.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def _build_text(build: dict[str, Any]) -> str:
    """The line about the build the training times come from."""
    if not build:
        return "No build recorded in runs/costs.json: no training times."
    if isinstance(build.get("note"), str):
        return build["note"]
    text = f"Training times from the build started {build.get('started', '?')}"
    if isinstance(build.get("cpu_count"), int):
        text += f" on {build['cpu_count']} cores"
    if isinstance(build.get("seconds"), (int, float)):
        text += f"; the whole build took {build['seconds']:,.0f} s"
    return text + "."
