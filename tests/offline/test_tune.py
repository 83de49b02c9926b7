"""The validation-day tuning: its selection rule, its split and its report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from model_export.evaluation import tuning as tune
from model_export.evaluation import tuning_report as report
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
    assert report.choose(SHIPPED, candidates) == "kept"


def test_choose_keeps_shipped_unless_crps_and_nll_both_improve() -> None:
    assert report.choose(SHIPPED, {"worse_nll": _m(10.0, 4.0, 3.1)}) is None
    assert report.choose(SHIPPED, {"worse_crps": _m(10.0, 5.1, 2.0)}) is None
    assert report.choose(SHIPPED, {"no_point": _m(11.0, 4.0, 2.0)}) is None
    assert report.choose(SHIPPED, {}) is None


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
    text = report.table({"a": {"crps": 13.14159, "mae_point": float("nan")}})
    row = text.splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "a"
    assert cells[1 + report.COLUMNS.index("crps")] == "13.1416"
    assert cells[1 + report.COLUMNS.index("mae_point")] == "n/a"
    assert cells[1 + report.COLUMNS.index("nll_positive")] == "n/a"


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
    winner = report.write_tuning_report(path, {"egmn/1": SHIPPED}, {"beta0.5": result}, "none")
    assert winner == "beta0.5"
    text = path.read_text()
    assert "`beta0.5` meets the rule" in text and "egmn beta0.5, calibrated on 1st half" in text
    assert "## Second round (issue 16)\n\nNot run yet." in text
    loser = dict(result, calibrated=_m(10.0, 5.5, 2.9))
    assert report.write_tuning_report(path, {"egmn/1": SHIPPED}, {"k16": loser}, "none") is None
    assert "No configuration meets the rule" in path.read_text()


def _wide(mae: float, crps: float, nll: float) -> dict[str, float]:
    return {
        **dict.fromkeys(report.NOISE_COLUMNS, 0.5),
        **_full(mae, crps, nll),
        "mae_median": mae,
    }


def test_second_round_section_names_the_winner_and_the_point(tmp_path: Path) -> None:
    def run(figures: dict[str, float], changes: dict[str, object]) -> dict[str, object]:
        options = {
            "eq12": {"mae": figures["mae_point"], "xauc": 0.66},
            "median": {"mae": figures["mae_point"] - 0.5, "xauc": 0.66},
            "mean": {"mae": 30.0, "xauc": 0.66},
        }
        return {
            "changes": changes,
            "best_epoch": 2,
            "train_seconds": 80.0,
            "train_cpu_seconds": 70.0,
            "calibrated": figures,
            "uncalibrated": figures,
            "point_options": options,
        }

    results = {
        "beta0.5": run(_wide(10.0, 5.0, 3.0), {"beta": 0.5}),
        "beta0.5-crps": run(_wide(10.0, 4.8, 2.9), tune.CONFIGS["beta0.5-crps"]),
        "beta0.5-dcn": run(_wide(10.0, 4.99, 2.9), tune.CONFIGS["beta0.5-dcn"]),
    }
    noise = [_wide(10.0, 5.0, 3.0), {**_wide(10.05, 5.05, 3.02), "xauc_point": 0.662}]
    path = tmp_path / "tuning.md"
    report.write_tuning_report(path, {"egmn/1": SHIPPED}, results, "none", noise)
    text = path.read_text()
    assert "`beta0.5-crps` meets the rule" in text
    assert "`beta0.5-dcn`: CRPS -0.010" in text and "does not qualify" in text
    assert "| seed range of `beta0.5` (tie margin) | 0.050 |" in text
    assert "on `beta0.5-crps`: point_s = `median`" in text


def test_the_served_directory_is_the_highest_numeric_version(tmp_path: Path) -> None:
    from service.versions import highest_version_dir

    for version in ("1", "2", "10", "notes"):
        (tmp_path / "egmn" / version).mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    assert highest_version_dir(tmp_path / "egmn") == tmp_path / "egmn" / "10"
    assert highest_version_dir(tmp_path / "empty") is None
    assert highest_version_dir(tmp_path / "missing") is None


def _full(mae: float, crps: float, nll: float, xauc: float = 0.66) -> dict[str, float]:
    return {
        "mae_point": mae,
        "crps": crps,
        "nll_positive": nll,
        "xauc_point": xauc,
        "coverage_0.1": 0.1,
        "coverage_0.5": 0.5,
        "coverage_0.9": 0.9,
    }


NOISE = {"crps": 0.05, "nll_positive": 0.02, "xauc_point": 0.002, "mae_point": 0.05}


def test_seed_noise_is_the_range_over_seeds() -> None:
    runs = [dict.fromkeys(report.NOISE_COLUMNS, v) for v in (1.0, 1.5, 1.2)]
    assert report.seed_noise(runs) == dict.fromkeys(report.NOISE_COLUMNS, 0.5)


def test_lever_must_beat_noise_on_crps_and_nll() -> None:
    ref = _full(10.0, 5.0, 3.0)
    assert report.qualifies(ref, _full(10.0, 4.9, 2.9), NOISE)
    assert not report.qualifies(ref, _full(10.0, 4.96, 2.9), NOISE)  # CRPS within noise
    assert not report.qualifies(ref, _full(10.0, 4.9, 2.99), NOISE)  # NLL within noise
    assert not report.qualifies(ref, _full(10.06, 4.9, 2.9), NOISE)  # MAE 0.6 % worse
    assert not report.qualifies(ref, _full(10.0, 4.9, 2.9, 0.657), NOISE)  # XAUC lost
    off = dict(_full(10.0, 4.9, 2.9), **{"coverage_0.9": 0.87})
    assert not report.qualifies(ref, off, NOISE)


def test_ties_on_crps_go_to_the_simpler_configuration() -> None:
    ref = _full(10.0, 5.0, 3.0)
    candidates = {"combo": _full(10.0, 4.80, 2.9), "one": _full(10.0, 4.84, 2.9)}
    assert report.choose_lever(ref, candidates, NOISE, {"combo": 3, "one": 1}) == "one"
    candidates["combo"] = _full(10.0, 4.70, 2.9)
    assert report.choose_lever(ref, candidates, NOISE, {"combo": 3, "one": 1}) == "combo"
    assert report.choose_lever(ref, {"x": _full(10, 5.0, 3.0)}, NOISE, {"x": 1}) is None


def test_point_changes_only_beyond_the_noise() -> None:
    eq12 = {"mae": 18.0, "xauc": 0.670}
    assert report.choose_point({"eq12": eq12, "median": {"mae": 17.98, "xauc": 0.67}}, NOISE) == (
        "eq12"
    )
    options = {
        "eq12": eq12,
        "median": {"mae": 17.9, "xauc": 0.669},
        "head": {"mae": 17.8, "xauc": 0.66},
    }
    assert report.choose_point(options, NOISE) == "median"
