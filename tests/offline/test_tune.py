"""The validation-day tuning: its selection rule, its split and its report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from model_export.evaluation import tuning as tune
from model_export.training.config import TrainConfig

SHIPPED = {"mae_point": 10.0, "crps": 5.0, "nll_positive": 3.0}


def _m(mae: float, crps: float, nll: float) -> dict[str, float]:
    return {"mae_point": mae, "crps": crps, "nll_positive": nll}


def test_choose_takes_lowest_crps_within_mae_tolerance() -> None:
    candidates = {
        "too_far": _m(10.2, 4.0, 2.0),  # best CRPS but MAE 2% worse: excluded
        "kept": _m(10.05, 4.8, 2.9),
        "second": _m(9.0, 4.9, 2.5),
    }
    assert tune.choose(SHIPPED, candidates) == "kept"


def test_choose_keeps_shipped_unless_crps_and_nll_both_improve() -> None:
    assert tune.choose(SHIPPED, {"worse_nll": _m(10.0, 4.0, 3.1)}) is None
    assert tune.choose(SHIPPED, {"worse_crps": _m(10.0, 5.1, 2.0)}) is None
    assert tune.choose(SHIPPED, {"no_point": _m(11.0, 4.0, 2.0)}) is None
    assert tune.choose(SHIPPED, {}) is None


@pytest.mark.parametrize("n", [2, 7, 22000])
def test_halves_split_every_row_once_in_time_order(n: int) -> None:
    first, second = tune.halves(n)
    rows = list(range(n))
    assert rows[first] + rows[second] == rows
    assert abs(len(rows[first]) - len(rows[second])) <= 1


def test_configurations_change_only_what_they_name() -> None:
    base = dataclasses.asdict(TrainConfig())
    for name, changes in tune.CONFIGS.items():
        got = dataclasses.asdict(tune.config_of(name))
        differ = {k for k in base if got[k] != base[k]}
        assert differ == set(changes) | {"num_threads"}, name
        assert got["num_threads"] == 1
    with pytest.raises(KeyError):
        tune.config_of("no-such-config")


def test_table_formats_and_marks_missing() -> None:
    text = tune.table({"a": {"crps": 13.14159, "mae_point": float("nan")}})
    row = text.splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "a"
    assert cells[1 + tune.COLUMNS.index("crps")] == "13.1416"
    assert cells[1 + tune.COLUMNS.index("mae_point")] == "n/a"
    assert cells[1 + tune.COLUMNS.index("nll_positive")] == "n/a"


def test_report_states_the_decision(tmp_path: Path) -> None:
    result = {
        "changes": {"beta": 0.5},
        "best_epoch": 3,
        "train_seconds": 100.0,
        "train_cpu_seconds": 90.0,
        "calibrated": _m(10.0, 4.5, 2.9),
        "uncalibrated": _m(10.0, 4.6, 3.2),
    }
    path = tmp_path / "tuning.md"
    winner = tune.write_tuning_report(path, {"egmn/1": SHIPPED}, {"good": result}, "none")
    assert winner == "good"
    text = path.read_text()
    assert "`good` meets the rule" in text and "egmn good, calibrated on 1st half" in text
    loser = dict(result, calibrated=_m(10.0, 5.5, 2.9))
    assert tune.write_tuning_report(path, {"egmn/1": SHIPPED}, {"bad": loser}, "none") is None
    assert "No configuration meets the rule" in path.read_text()


def test_the_served_directory_is_the_highest_numeric_version(tmp_path: Path) -> None:
    from service.versions import highest_version_dir

    for version in ("1", "2", "10", "notes"):
        (tmp_path / "egmn" / version).mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    assert highest_version_dir(tmp_path / "egmn") == tmp_path / "egmn" / "10"
    assert highest_version_dir(tmp_path / "empty") is None
    assert highest_version_dir(tmp_path / "missing") is None
