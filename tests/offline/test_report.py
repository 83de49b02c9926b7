"""The evaluation report on a tiny slice: tables, JSON, plots, verdicts, duration groups."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_export.data import load_joined, split_by_day
from model_export.data.prepared import prepare_split
from model_export.evaluation import costs
from model_export.evaluation import report as evaluation
from model_export.evaluation import seeds as seed_figures
from model_export.evaluation.runs import manifest_evaluation, run_baseline
from model_export.evaluation.scoring import DURATION_GROUPS, Scored, duration_group
from model_export.evaluation.tables import (
    best_of,
    headline_table,
    paper_table,
    ties_with,
    verdicts,
)
from model_export.export.runs import write_baseline
from model_export.training.config import BaselineConfig
from tests.support import ROOT


def test_duration_groups_cover_every_row() -> None:
    d = np.array([np.nan, 0.0, 1_000.0, 14_999.0, 15_000.0, 59_000.0, 200_000.0, 300_000.0, 9e6])
    got = duration_group(d)
    assert got.tolist() == [0, 0, 1, 1, 2, 3, 5, 6, 6]
    assert len(DURATION_GROUPS) == 7


def _scored(name: str, **metrics: float) -> Scored:
    return Scored(name=name, family="x", dist=None, point=np.zeros(1), overall=dict(metrics))


def test_verdicts_name_a_baseline_that_wins_a_column() -> None:
    models = [
        _scored("egmn", mae_point=19.0, xauc_point=0.66, **{"coverage_0.5": 0.49}),
        _scored("d2q", mae_point=18.5, xauc_point=0.65, **{"coverage_0.5": 0.53}),
    ]
    assert best_of(models, "mae_point") == "d2q"
    assert best_of(models, "xauc_point") == "egmn"
    assert best_of(models, "coverage_0.5") == "egmn"  # closest to the level wins
    lines = "\n".join(verdicts(models))
    assert "MAE point (s): **d2q is best** (18.500); EGMN 19.000, behind beyond" in lines
    assert "XAUC point: EGMN is best (0.6600)." in lines


def test_a_difference_inside_the_seed_ranges_is_a_tie() -> None:
    # EGMN's seeds span MAE 18.9-19.3 and d2q's 18.5-19.0: the ranges overlap, so d2q's
    # better shipped MAE is a tie; on XAUC EGMN's worst seed (0.668) beats d2q's best
    # (0.665), so EGMN is ahead beyond the spread.
    egmn = _scored("egmn", mae_point=19.0, xauc_point=0.670)
    egmn.seed_runs = {
        "1": {"overall": {"mae_point": 18.9, "xauc_point": 0.668}},
        "2": {"overall": {"mae_point": 19.3, "xauc_point": 0.672}},
    }
    d2q = _scored("d2q", mae_point=18.5, xauc_point=0.660)
    d2q.seed_runs = {
        "1": {"overall": {"mae_point": 19.0, "xauc_point": 0.665}},
        "2": {"overall": {"mae_point": 18.7, "xauc_point": 0.663}},
    }
    far = _scored("vr", mae_point=22.0, xauc_point=0.64)
    models = [egmn, d2q, far]
    assert ties_with(models, "mae_point", "d2q") == ["egmn"]
    assert ties_with(models, "xauc_point", "egmn") == []
    lines = "\n".join(verdicts(models))
    assert "**d2q is best** (18.500 ±0.250); tied within the seed spread: egmn" in lines
    assert "EGMN 19.000 ±0.200, a tie." in lines
    assert "XAUC point: EGMN is best (0.6700 ±0.0020)." in lines
    table = headline_table(models)
    assert "| egmn | x | 19.000 ±0.200 | 0.6700 ±0.0020 |" in table
    assert "| vr | x | 22.000 | 0.6400 |" in table  # one seed: no spread


def test_coverage_ties_compare_distances_to_the_level() -> None:
    # 0.47 and 0.53 are equally far from 0.5; 0.45-0.46 is further than 0.52-0.53.
    a = _scored("egmn", **{"coverage_0.5": 0.47})
    a.seed_runs = {"1": {"overall": {"coverage_0.5": 0.48}}}
    b = _scored("d2q", **{"coverage_0.5": 0.53})
    b.seed_runs = {"1": {"overall": {"coverage_0.5": 0.52}}}
    c = _scored("vr", **{"coverage_0.5": 0.45})
    c.seed_runs = {"1": {"overall": {"coverage_0.5": 0.46}}}
    assert ties_with([a, b, c], "coverage_0.5", "egmn") == ["d2q"]


@pytest.mark.slow
def test_report_on_a_tiny_slice(tmp_path: Path) -> None:
    full = split_by_day(load_joined())
    split = dataclasses.replace(
        full,
        train=full.train.iloc[:5_000].reset_index(drop=True),
        validation=full.validation.iloc[:1_000].reset_index(drop=True),
        test=full.test.iloc[:1_200].reset_index(drop=True),
    )
    prepared = prepare_split(split)
    models_dir, reports_dir = tmp_path / "models", tmp_path / "reports"
    shutil.copytree(ROOT / "models" / "egmn" / "1", models_dir / "egmn" / "1")
    small = {"hidden": (16,), "max_epochs": 1, "batch_size": 512}
    for name in ("vr", "softmax"):
        run = run_baseline(prepared, BaselineConfig(model=name, **small), progress=False)  # type: ignore[arg-type]
        evaluation_block = manifest_evaluation(run.window, run.metrics, {})
        write_baseline(run, models_dir / name / "1", "1", evaluation_block)
    d2q = run_baseline(prepared, BaselineConfig(model="d2q", **small), progress=False)  # type: ignore[arg-type]
    # VR once more with another seed, as `python -m model_export seeds` does it.
    other = run_baseline(prepared, BaselineConfig(model="vr", seed=1, **small), progress=False)  # type: ignore[arg-type]
    seed_dir = tmp_path / "seeds" / "1" / "vr" / "1"
    write_baseline(other, seed_dir, "1", manifest_evaluation(other.window, other.metrics, {}))
    seeds_path = tmp_path / "seeds.json"
    seed_figures.save(seeds_path, {"vr": {"1": seed_figures.figures_of(seed_dir, split)}}, None)
    seed_runs = seed_figures.load(seeds_path)
    assert seed_runs["vr"]["1"]["overall"]["mae_point"] == pytest.approx(other.metrics["mae_point"])

    inputs = evaluation.collect(models_dir, split, d2q, seed_runs=seed_runs)
    assert [m.name for m in inputs.models] == ["egmn", "vr", "softmax", "d2q"]
    path = evaluation.write_report(reports_dir, inputs, models_dir, notes="tiny")
    # Nothing machine-dependent in the report: written again, every file is the same bytes.
    again = evaluation.write_report(tmp_path / "again", inputs, models_dir, notes="tiny")
    for written in sorted(reports_dir.iterdir()):
        assert (again.parent / written.name).read_bytes() == written.read_bytes(), written.name
    assert "costs.md" in path.read_text()

    text = path.read_text()
    for name in ("egmn", "vr", "softmax", "d2q"):
        assert f"\n| {name} | " in text
    assert "| d2q | quantile |" in text
    vr_mae = sorted([other.metrics["mae_point"], doc_mae := inputs.models[1].overall["mae_point"]])
    half = (vr_mae[1] - vr_mae[0]) / 2
    assert f"| vr | normal | {doc_mae:.3f} ±{half:.3f} |" in text
    assert "### Who wins each column" in text and "## By video duration" in text
    assert text.count("![") == 3
    doc = json.loads((reports_dir / "evaluation.json").read_text())
    assert doc["rows"] == 1_200 and set(doc["models"]) == {"egmn", "vr", "softmax", "d2q"}
    egmn = doc["models"]["egmn"]
    assert egmn["family"] == "egm" and egmn["onnx_mb"] > 0
    assert not {"train_seconds", "train_cpu_seconds", "onnx_rows_per_s"} & set(egmn)
    assert egmn["seeds"] == 1 and doc["models"]["vr"]["seeds"] == 2
    assert egmn["overall"]["crps"] > 0 and "nll_positive" in egmn["overall"]
    assert set(egmn["by_duration"]) <= {g for g, _, _ in DURATION_GROUPS}
    rows = sum(g["rows"] for g in egmn["by_duration"].values())
    assert rows == 1_200  # every test row sits in exactly one group
    # D2Q has no model directory here: scored from its run, through its quantile family.
    d2q_doc = doc["models"]["d2q"]
    assert d2q_doc["family"] == "quantile" and d2q_doc["overall"].keys() == egmn["overall"].keys()
    assert d2q_doc["overall"]["crps"] > 0
    for png in ("distributions", "reliability", "egmn_mixture"):
        data = (reports_dir / f"evaluation_{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

    # The timings go to costs.md, from the build's record, only when asked.
    record = costs.Record(tmp_path / "runs" / costs.RECORD)
    record.start_build()
    record.run("vr/1", 12.0, 20.0, 13.0)
    record.run("egmn/1 without p0", 30.0, 50.0, 31.0)
    record.finish_build(99.0)
    costs_path = costs.write_costs(reports_dir, models_dir, split, record.load())
    table = costs_path.read_text()
    assert "| vr/1 | normal | 12 | 20 | " in table
    assert "| egmn/1 without p0 | - | 30 | 50 | - | - |" in table
    assert "| softmax/1 | histogram | - | - |" in table
    assert "the whole build took 99 s" in table
    cost_doc = json.loads((reports_dir / "costs.json").read_text())
    assert cost_doc["models"]["egmn/1"]["onnx_rows_per_s"] > 0


def test_the_papers_table_puts_vr_first_then_the_worst_mae_to_the_best() -> None:
    def scored(name: str, mae: float, xauc: float) -> Scored:
        point = np.zeros(1)
        return Scored(name, "normal", None, point, overall={"mae_point": mae, "xauc_point": xauc})

    models = [scored("egmn", 18.9, 0.67), scored("vr", 22.4, 0.64), scored("ziln", 24.4, 0.65)]
    rows = paper_table(models).splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["vr", "ziln", "egmn"]
    assert rows[1] == "| ziln | 24.400 | 0.6500 |"
