"""History features: point-in-time correctness, smoothing by hand, the day-by-day encoding.

The leak test is the one that matters: a training row must never read its own label or a
later one. It is proven two ways on the real logs: labels from day D on are replaced by wild
values and the features of every row up to day D must not move (while later rows' do, so the
test can fail); and a sample of rows is recomputed by brute force, a plain pandas filter on
the days strictly before the row's own day.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_export.data import load_joined, split_by_day
from model_export.data.features import FittedFeatures
from model_export.data.history import (
    HISTORY_FIELDS,
    PRIOR_VIEWS,
    RATIO_CAP,
    STATISTICS,
    feature_name,
    join_history,
    point_in_time_tables,
    standardized,
)
from model_export.data.kuairand import LABEL, Split
from model_export.data.prepared import (
    Prepared,
    encode,
    history_tables,
    prepare_split,
    training_window,
)
from model_export.training.checkpoint import load_run, save_run
from model_export.training.config import TrainConfig, check_inputs
from model_export.training.egmn import EGMNRun, build_egmn
from model_export.training.loop import History


@pytest.fixture(scope="module")
def split() -> Iterator[Split]:
    yield split_by_day(load_joined())


@pytest.fixture(scope="module")
def prepared(split: Split) -> Iterator[Prepared]:
    yield prepare_split(split, history=True)


def _frames(split: Split) -> pd.DataFrame:
    return pd.concat([split.train, split.validation, split.test], ignore_index=True)


def _with_labels_from(split: Split, day: int, value: float) -> Split:
    """The split with every label of ``day`` and later replaced by ``value``."""

    def wild(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out.loc[out["date"].astype("int64") >= day, LABEL] = value
        return out

    return Split(
        wild(split.train),
        wild(split.validation),
        wild(split.test),
        split.train_dates,
        split.validation_date,
        split.test_date,
    )


@pytest.mark.slow
@pytest.mark.parametrize("which", [3, "validation"])
def test_no_row_reads_its_own_label_or_a_later_one(split: Split, which: int | str) -> None:
    day = split.validation_date if which == "validation" else split.train_dates[int(which)]
    rows = _frames(split)
    before = join_history(rows, history_tables(split))
    changed = _with_labels_from(split, day, 7777.0)
    after = join_history(_frames(changed), history_tables(changed))
    dates = rows["date"].astype("int64").to_numpy()
    upto = dates <= day
    pd.testing.assert_frame_equal(before[upto], after[upto])
    # The wild labels do reach the rows after day D: the comparison above can fail.
    later = ~upto
    assert (before[later] != after[later]).any(axis=None)
    # The first day has no earlier day: no statistic at all.
    assert np.all(
        np.isnan(before.loc[dates == min(dates), feature_name("user_id", "mean_watch_s")])
    )


def _stats(views: pd.DataFrame) -> dict[str, float]:
    """Plain statistics of some views, unsmoothed."""
    y = views[LABEL].astype(float)
    d = views["duration_ms"].astype(float)
    known = d > 0
    ratio = (y[known] * 1000.0 / d[known]).clip(upper=RATIO_CAP)
    return {
        "n": float(len(y)),
        "n_ratio": float(known.sum()),
        "mean": float(y.mean()) if len(y) else 0.0,
        "median": float(y.median()) if len(y) else 0.0,
        "skip": float((y <= 3.0).mean()) if len(y) else 0.0,
        "ratio": float(ratio.mean()) if len(ratio) else 0.0,
        "log": float(np.log1p(y).mean()) if len(y) else 0.0,
    }


def _brute_force(
    seen: pd.DataFrame, row: pd.Series, field: str, globals_by_day: dict[int, dict[str, float]]
) -> dict[str, float]:
    """One row's statistics by hand: a plain filter on the days before its own."""
    day = int(row["date"])
    earlier = seen[seen["date"].astype("int64") < day]
    if len(earlier) == 0:
        return {s: (0.0 if s == "count" else math.nan) for s in STATISTICS}
    k = PRIOR_VIEWS
    if day not in globals_by_day:
        globals_by_day[day] = _stats(earlier)
    g = globals_by_day[day]
    mine = _stats(earlier[earlier[field].astype("int64") == int(row[field])])
    n, nr = mine["n"], mine["n_ratio"]
    return {
        "count": n,
        "mean_watch_s": (n * mine["mean"] + k * g["mean"]) / (n + k),
        "median_watch_s": (n * mine["median"] + k * g["median"]) / (n + k),
        "skip_share": (n * mine["skip"] + k * g["skip"]) / (n + k),
        "mean_watch_ratio": (nr * mine["ratio"] + k * g["ratio"]) / (nr + k),
        "mean_log_watch": (n * mine["log"] + k * g["log"]) / (n + k),
    }


@pytest.mark.slow
def test_features_equal_a_brute_force_recomputation(split: Split) -> None:
    rows = _frames(split)
    joined = join_history(rows, history_tables(split))
    seen = pd.concat([split.train, split.validation], ignore_index=True)
    rng = np.random.default_rng(0)
    # Six rows of every day, the first day (no history) and the test day among them.
    dates = rows["date"].astype("int64").to_numpy()
    sample = np.concatenate(
        [rng.choice(np.flatnonzero(dates == d), 6, replace=False) for d in np.unique(dates)]
    )
    globals_by_day: dict[int, dict[str, float]] = {}
    for i in sample:
        row = rows.iloc[i]
        for field in HISTORY_FIELDS:
            want = _brute_force(seen, row, field, globals_by_day)
            for statistic in STATISTICS:
                got = float(joined.iloc[i][feature_name(field, statistic)])
                expect = want[statistic]
                if math.isnan(expect):
                    assert math.isnan(got), (i, field, statistic)
                else:
                    assert got == pytest.approx(expect, rel=2e-6, abs=1e-6), (i, field, statistic)
            unseen = float(joined.iloc[i][f"{field}__hist_unseen"])
            assert unseen == float(want["count"] == 0.0)


def _toy() -> pd.DataFrame:
    """Three days by hand. Day 1: user 7 watches 1, 2 and 12 s of 10 s videos, user 9 watches
    4 s of a video of unknown duration. Day 2: user 8 (new) and user 7 again. Day 3: one row."""
    return pd.DataFrame(
        {
            "date": [1, 1, 1, 1, 2, 2, 3],
            "user_id": [7, 7, 7, 9, 8, 7, 7],
            "video_id": [1, 2, 3, 4, 5, 6, 7],
            "author_id": [1, 1, 1, 1, 1, 1, 1],
            LABEL: [1.0, 2.0, 12.0, 4.0, 100.0, 3.0, 5.0],
            "duration_ms": [10_000, 10_000, 10_000, 0, 1_000, 10_000, 10_000],
        }
    )


def test_smoothing_and_unseen_ids_by_hand() -> None:
    assert PRIOR_VIEWS == 5.0 and RATIO_CAP == 5.0  # the hand values below assume them
    toy = _toy()
    tables = point_in_time_tables(toy, [1, 2, 3])
    # Day 1 has no earlier day: no ids, no global value, count 0.
    first = tables[1].table("user_id")
    assert first.ids.size == 0
    assert first.defaults["count"] == 0.0 and math.isnan(first.defaults["mean_watch_s"])
    # Day 2 reads day 1: global n 4, mean 19/4, median (2 + 4)/2, skip share 2/4,
    # watch ratio (0.1 + 0.2 + 1.2)/3 over the three known durations, mean log1p.
    day2 = tables[2].table("user_id")
    np.testing.assert_array_equal(day2.ids, [7, 9])
    g_log = (math.log(2) + math.log(3) + math.log(13) + math.log(5)) / 4
    defaults = {
        "count": 0.0,
        "mean_watch_s": 4.75,
        "median_watch_s": 3.0,
        "skip_share": 0.5,
        "mean_watch_ratio": 0.5,
        "mean_log_watch": g_log,
    }
    for statistic, value in defaults.items():
        assert day2.defaults[statistic] == pytest.approx(value, rel=1e-6)
    # User 7: n 3, sum 15, median 2, 2 skips, ratios 0.1 + 0.2 + 1.2; k = 5 pseudo-views.
    u7 = {s: float(day2.columns[s][0]) for s in STATISTICS}
    assert u7["count"] == 3.0
    assert u7["mean_watch_s"] == pytest.approx((15 + 5 * 4.75) / 8, rel=1e-6)
    assert u7["median_watch_s"] == pytest.approx((3 * 2 + 5 * 3.0) / 8, rel=1e-6)
    assert u7["skip_share"] == pytest.approx((2 + 5 * 0.5) / 8, rel=1e-6)
    assert u7["mean_watch_ratio"] == pytest.approx((1.5 + 5 * 0.5) / 8, rel=1e-6)
    log7 = math.log(2) + math.log(3) + math.log(13)
    assert u7["mean_log_watch"] == pytest.approx((log7 + 5 * g_log) / 8, rel=1e-6)
    # User 9: one view, no known duration: its ratio is the global one.
    assert float(day2.columns["mean_watch_ratio"][1]) == pytest.approx(0.5, rel=1e-6)
    assert float(day2.columns["mean_watch_s"][1]) == pytest.approx((4 + 5 * 4.75) / 6, rel=1e-6)
    # Day 3 reads days 1-2: user 8's 100 s of a 1 s clip is a ratio capped at 5.
    day3 = tables[3].table("user_id")
    u8 = int(np.searchsorted(day3.ids, 8))
    g_ratio = (1.5 + 5.0 + 0.3) / 5  # known durations on days 1-2: 0.1 0.2 1.2 | 5 (cap) 0.3
    assert float(day3.columns["mean_watch_ratio"][u8]) == pytest.approx(
        (5.0 + 5 * g_ratio) / 6, rel=1e-6
    )
    # Joined onto the rows: user 8 on day 2 is unseen and gets the day's global values.
    joined = join_history(toy, tables)
    row = joined.iloc[4]
    assert row["user_id__hist_unseen"] == 1.0 and row["user_id__hist_count"] == 0.0
    assert row["user_id__hist_mean_watch_s"] == pytest.approx(4.75, rel=1e-6)
    assert joined.iloc[0]["user_id__hist_unseen"] == 1.0
    assert math.isnan(joined.iloc[0]["user_id__hist_mean_watch_s"])


def test_standardised_columns_by_hand() -> None:
    """log1p, then (x - mean) / std; the fill where the statistic has no value (day 1)."""
    from service.manifest import LookupFeature

    tables = point_in_time_tables(_toy(), [1, 2])
    spec = LookupFeature(
        name="u",
        source="user_id",
        table="user_id",
        statistic="mean_watch_s",
        default=4.75,
        log1p=True,
        mean=1.5,
        std=0.5,
        fill=0.0,
    )
    got = standardized(spec, tables[2], np.array([7, 8, 9]))
    u7 = (15 + 5 * 4.75) / 8
    want = [(math.log1p(u7) - 1.5) / 0.5, (math.log1p(4.75) - 1.5) / 0.5]
    np.testing.assert_allclose(got[:2], want, rtol=1e-6)
    np.testing.assert_array_equal(standardized(spec, tables[1], np.array([7])), [0.0])


@pytest.mark.slow
def test_days_are_encoded_with_their_own_tables(split: Split, prepared: Prepared) -> None:
    fitted = prepared.fitted
    assert fitted.history is not None
    assert fitted.history.cutoff_date == split.validation_date
    # The frozen tables are the test day's, and only rows after the cut-off may read them.
    enc = encode(fitted, split.test)
    np.testing.assert_array_equal(enc.numeric.numpy(), prepared.test.numeric.numpy())
    with pytest.raises(ValueError, match="cut-off"):
        encode(fitted, split.validation)
    names = fitted.inputs[1].columns
    assert names[-1] == "author_id__hist_mean_log_watch"
    assert "user_id__hist_count__unseen" in names
    assert np.all(np.isfinite(prepared.train.numeric.numpy()))
    # The first training day has no history: its count is 0 for every row, all unseen.
    first = split.train["date"].astype("int64").to_numpy() == split.train_dates[0]
    unseen = prepared.train.numeric[:, names.index("user_id__hist_count__unseen")].numpy()
    assert np.all(unseen[first] == 1.0)


@pytest.mark.slow
def test_checkpoint_state_round_trip(prepared: Prepared) -> None:
    fitted = prepared.fitted
    back = FittedFeatures.from_state(fitted.state())
    assert back.features == fitted.features and back.inputs == fitted.inputs
    assert back.history is not None and fitted.history is not None
    assert back.history.cutoff_date == fitted.history.cutoff_date
    for name, table in fitted.history.tables.tables.items():
        other = back.history.tables.table(name)
        np.testing.assert_array_equal(other.ids, table.ids)
        for s, column in table.columns.items():
            np.testing.assert_array_equal(other.columns[s], column)
        assert other.defaults == table.defaults


@pytest.mark.slow
def test_checkpoint_keeps_the_tables(prepared: Prepared, tmp_path: Path) -> None:
    """A saved run keeps the frozen tables its export ships (the run's own training history
    is another key)."""
    config = TrainConfig(history=True, hidden=(8,))
    fitted = prepared.fitted
    run = EGMNRun(
        config=config,
        fitted=fitted,
        window=training_window(prepared.split),
        model=build_egmn(fitted.cardinalities, fitted.numeric_width, config),
        calibration=None,
        history=History(train_loss=[1.0], validation_nll=[1.0], best_epoch=0),
    )
    save_run(run, tmp_path / "checkpoint.pt")
    back = load_run(tmp_path / "checkpoint.pt", EGMNRun)
    assert back.config.history and back.history.best_epoch == 0
    assert back.fitted.history is not None and fitted.history is not None
    np.testing.assert_array_equal(
        back.fitted.history.tables.table("video_id").columns["median_watch_s"],
        fitted.history.tables.table("video_id").columns["median_watch_s"],
    )


def test_history_is_opt_in() -> None:
    assert TrainConfig().history is False
    check_inputs(TrainConfig(), has_history=False)
    with pytest.raises(ValueError, match="with history"):
        check_inputs(TrainConfig(history=True), has_history=False)
