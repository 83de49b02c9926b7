"""History features, point-in-time correct: what the same user, video and author were watched
for on strictly earlier days.

For each id field (``user_id``, ``video_id``, ``author_id``) and each day D, a table of the
views on the days before D: per id, the count and five statistics of the watch time, each
smoothed towards its global value (over the same earlier days) with ``PRIOR_VIEWS`` pseudo
views, so an id seen once does not get a mean of one label:

- ``count``: views (the model reads log1p of it; an unseen id has 0);
- ``mean_watch_s``, ``median_watch_s``: watch time in seconds (median smoothed as
  ``(n * median + k * global median) / (n + k)``);
- ``skip_share``: share of views of at most ``SKIP_S`` seconds (the quick skips);
- ``mean_watch_ratio``: watch time / video duration over the views whose duration is known,
  each ratio capped at ``RATIO_CAP`` (replays of a short clip reach ratios near 60; 99.9 % are below 4.5), so
  it is smoothed by its own count of such views;
- ``mean_log_watch``: mean of log(1 + watch time in seconds).

An id with no earlier views gets the global values (which is what the smoothing gives for
n = 0), count 0 and the ``__unseen`` flag. The rows of the first day have no earlier day at
all: no global value exists, their statistics are missing, and the model sees the fill (the
training mean) and the flag.

Which tables a row reads (the point-in-time rule): a training row of day D reads the tables
of the days before D, never its own day; the validation day reads all training days; the test
day reads the training and validation days. That last set is what the exported model ships
(``history.npz``, frozen at the end of the validation day, the last day the model was fitted
on: its calibration is fitted there; the manifest says ``history.cutoff_date``). A service
frozen at export answers every later day with it, which is the test day's reading offline.

Options (:class:`HistoryOptions`; the defaults are the above). The cumulative counts grow
day by day (the mean user count is 0 on the first training day, 7.9 on the last, 9.7 on the
validation day and 10.8 on the test day), so later days sit beyond the range the model was
fitted on. ``window`` keeps only the views of the last N days before D (the statistics, the
global values they are smoothed towards, and the counts); ``counts="per_day"`` divides the
view count by the number of days it was counted over (the days before D in the window), and
``counts="none"`` drops the count feature (the unseen flag stays, on the first statistic
kept). The tables keep the same layout, so the served lookup is unchanged.

Rows are encoded day by day through ``service.runtime.features`` with that day's tables, the
same code and the same table objects as the service's lookup: one implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from model_export.data.kuairand import LABEL
from service.manifest import LookupFeature
from service.runtime.features import encode_lookup, lookup_values, table_rows
from service.runtime.lookup import LookupTables, Table

HISTORY_FIELDS = ("user_id", "video_id", "author_id")
"""Id columns whose history is looked up (each its own table, named after the column)."""

STATISTICS = (
    "count",
    "mean_watch_s",
    "median_watch_s",
    "skip_share",
    "mean_watch_ratio",
    "mean_log_watch",
)

LOG1P_STATISTICS = frozenset({"count", "mean_watch_s", "median_watch_s"})
"""Statistics read through log1p: counts and seconds are heavy-tailed."""

PRIOR_VIEWS = 5.0
"""k: pseudo-views at the global value each statistic of an id is smoothed with."""

SKIP_S = 3.0
"""A view of at most this many seconds is a quick skip (the manifest's default threshold)."""

RATIO_CAP = 5.0
"""Watch ratios above this are capped before averaging (replays of very short clips)."""

DURATION = "duration_ms"

COUNT_MODES = ("raw", "per_day", "none")


@dataclass(frozen=True)
class HistoryOptions:
    """Which views a day's tables hold and how the count enters (module docstring)."""

    window: int = 0
    counts: str = "raw"

    def __post_init__(self) -> None:
        if self.window < 0:
            raise ValueError(f"history window {self.window} < 0")
        if self.counts not in COUNT_MODES:
            raise ValueError(f"history counts {self.counts!r} not one of {COUNT_MODES}")

    def statistics(self) -> tuple[str, ...]:
        """The statistics the model reads (every table holds all of them)."""
        return STATISTICS if self.counts != "none" else STATISTICS[1:]

    def days_before(self, all_days: Sequence[int], day: int) -> list[int]:
        """The days whose views day ``day``'s tables hold: earlier ones, the last
        ``window`` of them when a window is set."""
        before = sorted(d for d in set(all_days) if d < day)
        return before[-self.window :] if self.window else before


def feature_name(field: str, statistic: str) -> str:
    """The model column of one statistic of one id field, e.g. ``user_id__hist_count``."""
    return f"{field}__hist_{statistic}"


def _view_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """Per view: the summands of every statistic (one row per log row)."""
    y = rows[LABEL].to_numpy(dtype=np.float64)
    duration = rows[DURATION].astype("float64").to_numpy(na_value=np.nan)
    known = np.isfinite(duration) & (duration > 0)
    ratio = np.where(known, np.minimum(y * 1000.0 / np.where(known, duration, 1.0), RATIO_CAP), 0.0)
    return pd.DataFrame(
        {
            "date": rows["date"].astype("int64").to_numpy(),
            "n": np.ones(len(rows)),
            "watch": y,
            "skip": (y <= SKIP_S).astype(np.float64),
            "ratio": ratio,
            "n_ratio": known.astype(np.float64),
            "log_watch": np.log1p(np.maximum(y, 0.0)),
        }
    )


def _globals(views: pd.DataFrame) -> dict[str, float]:
    """The global value of each statistic over some views (NaN when there are none)."""
    if len(views) == 0:
        return {s: (0.0 if s == "count" else float("nan")) for s in STATISTICS}
    n_ratio = float(views["n_ratio"].sum())
    return {
        "count": 0.0,
        "mean_watch_s": float(views["watch"].mean()),
        "median_watch_s": float(views["watch"].median()),
        "skip_share": float(views["skip"].mean()),
        "mean_watch_ratio": float(views["ratio"].sum() / n_ratio) if n_ratio else float("nan"),
        "mean_log_watch": float(views["log_watch"].mean()),
    }


def _smoothed(sums: pd.DataFrame, medians: pd.Series, prior: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Each statistic of each id, shrunk towards ``prior`` with PRIOR_VIEWS pseudo-views."""
    k = PRIOR_VIEWS
    n = sums["n"].to_numpy()
    n_ratio = sums["n_ratio"].to_numpy()
    med = medians.reindex(sums.index).to_numpy(dtype=np.float64)
    return {
        "count": n,
        "mean_watch_s": (sums["watch"].to_numpy() + k * prior["mean_watch_s"]) / (n + k),
        "median_watch_s": (n * med + k * prior["median_watch_s"]) / (n + k),
        "skip_share": (sums["skip"].to_numpy() + k * prior["skip_share"]) / (n + k),
        "mean_watch_ratio": (sums["ratio"].to_numpy() + k * prior["mean_watch_ratio"])
        / (n_ratio + k),
        "mean_log_watch": (sums["log_watch"].to_numpy() + k * prior["mean_log_watch"]) / (n + k),
    }


def point_in_time_tables(
    rows: pd.DataFrame, dates: Sequence[int], options: HistoryOptions | None = None
) -> dict[int, LookupTables]:
    """For each day D of ``dates``, the tables of the views in ``rows`` on days before D
    (with a window, on the last ``options.window`` days before D only).

    Vectorised: per id field, the views are summed per (id, day) and accumulated over the days
    of each id (cumulative sums); the tables of day D are, per id, the running sums of its
    last day before D. Only the median needs the views themselves: one groupby per day.
    """
    opts = options if options is not None else HistoryOptions()
    if opts.window or opts.counts != "raw":
        return _windowed_tables(rows, dates, opts)
    views = _view_columns(rows)
    sums_cols = ["n", "watch", "skip", "ratio", "n_ratio", "log_watch"]
    out: dict[int, dict[str, Table]] = {int(d): {} for d in dates}
    priors = {int(d): _globals(views[views["date"] < d]) for d in dates}
    for field in HISTORY_FIELDS:
        ids = rows[field].astype("int64").to_numpy()
        per_day = (
            views.assign(id=ids).groupby(["id", "date"], sort=True)[sums_cols].sum().reset_index()
        )
        running = per_day.groupby("id", sort=False)[sums_cols].cumsum()
        running[["id", "date"]] = per_day[["id", "date"]]
        keyed = views.assign(id=ids)
        for d in out:
            before = running[running["date"] < d]
            sums = before.groupby("id", sort=True)[sums_cols].last()
            medians = keyed[keyed["date"] < d].groupby("id", sort=True)["watch"].median()
            prior = priors[d]
            stats = _smoothed(sums, medians, prior)
            out[d][field] = Table(
                ids=sums.index.to_numpy(dtype=np.int64),
                columns={s: np.asarray(stats[s], dtype=np.float32) for s in STATISTICS},
                defaults={s: float(np.float32(prior[s])) for s in STATISTICS},
            )
    return {d: LookupTables(tables) for d, tables in out.items()}


def _windowed_tables(
    rows: pd.DataFrame, dates: Sequence[int], opts: HistoryOptions
) -> dict[int, LookupTables]:
    """:func:`point_in_time_tables` with a window and/or counts per day: per day D, the
    views of the days ``opts.days_before`` names, summed directly (a few days each)."""
    views = _view_columns(rows)
    sums_cols = ["n", "watch", "skip", "ratio", "n_ratio", "log_watch"]
    all_days = views["date"].unique().tolist()
    out: dict[int, LookupTables] = {}
    for d in dates:
        days = opts.days_before(all_days, int(d))
        chosen = views[views["date"].isin(days)]
        prior = _globals(chosen)
        tables: dict[str, Table] = {}
        for field in HISTORY_FIELDS:
            ids = rows.loc[chosen.index, field].astype("int64").to_numpy()
            keyed = chosen.assign(id=ids)
            sums = keyed.groupby("id", sort=True)[sums_cols].sum()
            medians = keyed.groupby("id", sort=True)["watch"].median()
            stats = _smoothed(sums, medians, prior)
            if opts.counts == "per_day":
                stats["count"] = stats["count"] / max(len(days), 1)
            tables[field] = Table(
                ids=sums.index.to_numpy(dtype=np.int64),
                columns={s: np.asarray(stats[s], dtype=np.float32) for s in STATISTICS},
                defaults={s: float(np.float32(prior[s])) for s in STATISTICS},
            )
        out[int(d)] = LookupTables(tables)
    return out


def history_decls(options: HistoryOptions | None = None) -> list[tuple[str, str, str]]:
    """(feature name, id field, statistic) of every history feature, in column order."""
    statistics = (options or HistoryOptions()).statistics()
    return [(feature_name(f, s), f, s) for f in HISTORY_FIELDS for s in statistics]


def _raw_statistic(tables: LookupTables, field: str, statistic: str, ids: np.ndarray) -> np.ndarray:
    table = tables.table(field)
    return lookup_values(table, statistic, table_rows(table, field, ids))


def join_history(
    df: pd.DataFrame,
    by_day: Mapping[int, LookupTables],
    options: HistoryOptions | None = None,
) -> pd.DataFrame:
    """The raw (unstandardised) history statistics of each row, from its own day's tables,
    and per id field the unseen flag; index aligned with ``df``. For inspection, fitting
    the standardisation and the tests: the model reads the same numbers through
    :func:`service.runtime.features.encode_columns`."""
    day = df["date"].astype("int64").to_numpy()
    decls = history_decls(options)
    out = pd.DataFrame(index=df.index)
    for name, field, statistic in decls:
        out[name] = np.nan
    for field in HISTORY_FIELDS:
        out[f"{field}__hist_unseen"] = np.nan
    for d in np.unique(day):
        mask = day == d
        tables = by_day[int(d)]
        ids = df.loc[mask, list(HISTORY_FIELDS)]
        for name, field, statistic in decls:
            values = _raw_statistic(tables, field, statistic, ids[field].to_numpy())
            out.loc[mask, name] = values.astype(np.float64)
        for field in HISTORY_FIELDS:
            rows = table_rows(tables.table(field), field, ids[field].to_numpy())
            out.loc[mask, f"{field}__hist_unseen"] = (rows < 0).astype(np.float64)
    return out


def fit_history_features(
    train: pd.DataFrame,
    by_day: Mapping[int, LookupTables],
    frozen: LookupTables,
    options: HistoryOptions | None = None,
) -> list[LookupFeature]:
    """The lookup feature specs: standardisation fitted on the training rows' own
    point-in-time statistics (finite ones), defaults those of the frozen tables."""
    raw = join_history(train, by_day, options)
    flagged = (options or HistoryOptions()).statistics()[0]
    specs: list[LookupFeature] = []
    for name, field, statistic in history_decls(options):
        x = raw[name].to_numpy(dtype=np.float64)
        x = x[np.isfinite(x)]
        log1p = statistic in LOG1P_STATISTICS
        if log1p:
            x = np.log1p(np.maximum(x, 0.0))
        std = float(x.std()) if x.size > 1 else 1.0
        specs.append(
            LookupFeature(
                name=name,
                source=field,
                table=field,
                statistic=statistic,
                default=frozen.table(field).defaults[statistic],
                log1p=log1p,
                mean=float(x.mean()) if x.size else 0.0,
                std=std if std > 1e-12 else 1.0,
                unseen_indicator=statistic == flagged,
            )
        )
    return specs


def standardized(spec: LookupFeature, tables: LookupTables, ids: np.ndarray) -> np.ndarray:
    """One history feature's model column for some ids (a test and inspection helper)."""
    table = tables.table(spec.table)
    return encode_lookup(spec, table, table_rows(table, spec.source, ids))[0]
