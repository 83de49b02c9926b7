"""The served EGMN against its targets on the test day, and where each one missed is explained.

The targets are fixed here, before any figure: absolute bounds on the mean over seeds, the
coverage of the 10/50/90 % quantiles within 0.01 of each level, and EGMN ahead of every
other model beyond the seed spread on six columns. :func:`targets_section` reads the
figures the report has already scored (the shipped directories and ``seeds.json``) and
``rolling.json``; it fits nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from model_export.evaluation.rolling import RANKED, by_day, rolling_table
from model_export.evaluation.scoring import Scored
from model_export.evaluation.tables import (
    COVERAGE_KEYS,
    HEADLINE,
    _fmt,
    best_of,
    seed_values,
    ties_with,
)

# (key, bound, "max" or "min"): the absolute targets, on the mean over seeds.
BOUNDS: tuple[tuple[str, float, str], ...] = (
    ("mae_point", 18.5, "max"),
    ("xauc_point", 0.680, "min"),
    ("crps", 13.8, "max"),
    ("nll_positive", 3.55, "max"),
)
COVERAGE_TOLERANCE = 0.01
AHEAD_ON = RANKED
HEADERS = {key: header for key, header, _ in HEADLINE}

# Where the experiment behind each target missed is; printed only for the targets missed.
LIMITS: Mapping[str, str] = {
    "mae_point": (
        "MAE of point_s: every lever tried on the validation day (history features, DCN-v2 "
        "cross layers, wider id embeddings, a separate point head, a CRPS term, free or "
        "anchored means; tuning.md, second round) moved the MAE of the best point by at most "
        "0.9 % (`beta0.5-dcn`, which fails on NLL), and the median point by at most 0.6 %; "
        "reaching 18.5 needs about 2 %. Sixteen models with different heads and losses but "
        "the same inputs land within a few tenths of a second of each other (the table "
        "above): the inputs, not the head, bound the point."
    ),
    "xauc_point": (
        "XAUC: the same levers moved the point's XAUC by at most +0.007 on the validation "
        "day (`beta0.5-cross`, tuning.md): the ranking of views within a day is bounded by "
        "what the shared features say about the user and the video."
    ),
    "crps": (
        'CRPS: the calibration hardly moves it (tuning.md, "What coverage costs": every '
        "weight, and none, within 0.05 on the validation day), so it is the network's "
        "sharpness; the levers that changed the network moved "
        "it by at most -0.18 on the validation day, and that one is served. CRPS is an "
        "integrated absolute error, bounded by the same inputs as the MAE."
    ),
    "nll_positive": (
        "NLL y>0: the calibration's coverage term costs it. Refitted on the validation day "
        "with the likelihood alone, the served network scores 0.055 nats lower but misses "
        'the coverage by up to 0.076 (tuning.md, "What coverage costs"); the coverage '
        "target wins by rule. Without features the family fits the views better than the "
        'histogram (tuning.md, "What limits NLL y>0"), so the family does not bound it.'
    ),
    "coverage": (
        "Coverage: the calibration is fitted on the validation day, where the served "
        "configuration's worst error at these levels is 0.004 (tuning.md); what it becomes "
        "on a later day depends on that day."
    ),
    "quick_skip_auc": (
        "Skip AUC: EGMN's is inside the best model's seed range, as are most of the "
        "distribution models': ordering the quick skips is shared by every model that sees "
        "the same inputs, and no lever moved it by more than +0.007 on the validation day "
        "(`beta0.5-cross3`, tuning.md)."
    ),
    "quick_skip_brier": (
        "Skip Brier: the calibration does not move it (0.2004 to 0.2008 over every coverage "
        'weight, and without calibration, on the validation day: tuning.md, "What coverage '
        'costs"), and no lever of the second round lowered it by more than 0.0017 '
        "(`beta0.5-cross3`, 0.1998 against 0.2015). The histogram models fit the masses of "
        "the buckets around 3 s directly by cross-entropy; EGMN reads P(T <= 3 s) off a "
        "mixture shaped by the likelihood of the whole curve. Its skip AUC is tied with the "
        "best: it orders the quick skips as well, and loses on the calibration of that one "
        "probability."
    ),
}


def _mean(m: Scored, key: str) -> float | None:
    values = seed_values(m, key)
    return float(np.mean(values)) if values else None


def _place(models: Sequence[Scored], key: str, name: str) -> tuple[bool, str]:
    """Whether ``name`` is ahead of every other model beyond the seed spread in ``key``,
    and how it stands otherwise."""
    best = best_of(models, key)
    if best is None:
        return False, "-"
    tied = ties_with(models, key, best)
    if best == name:
        if not tied:
            return True, "ahead of every model beyond the seed spread"
        return False, "best, tied within the seed spread with " + ", ".join(tied)
    if name in tied:
        return False, f"tied within the seed spread with the best, {best}"
    return False, f"behind {best} beyond the seed spread"


def _on_other_days(key: str, folds: Mapping[str, Mapping[str, object]], name: str) -> str:
    """What the rolling-origin days add to a target missed: the best figure of any model
    there (a bound's reach), or EGMN's coverage there."""
    days = by_day(folds)
    if not days:
        return ""
    if key == "coverage":
        said = []
        for day, models in days.items():
            own = models.get(name, {})
            if all(k in own for k in COVERAGE_KEYS):
                said.append(f"{day}: " + " / ".join(f"{own[k]:.4f}" for k in COVERAGE_KEYS))
        return (
            " On the rolling-origin days, EGMN's coverage: " + "; ".join(said) + "." if said else ""
        )
    bound = next(((b, kind) for k, b, kind in BOUNDS if k == key), None)
    if bound is None:
        return ""
    limit, kind = bound
    own = [(day, float(m[name][key])) for day, m in days.items() if key in m.get(name, {})]
    if not own:
        return ""
    met = [day for day, v in own if (v <= limit if kind == "max" else v >= limit)]
    text = " On the rolling-origin days EGMN scores " + ", ".join(
        f"{_fmt(v, key)} ({day})" for day, v in own
    )
    if met:
        return text + f": the bound is met on {', '.join(met)}, so it depends on the day too."
    lower = kind == "max"
    figures = [(float(f[key]), m, d) for d, ms in days.items() for m, f in ms.items() if key in f]
    value, model, day = min(figures) if lower else max(figures)
    return (
        text
        + f", and no model reaches the bound there (the best: {model}'s {_fmt(value, key)}, {day})."
    )


def targets_section(
    models: Sequence[Scored],
    folds: Mapping[str, Mapping[str, object]],
    test_date: int | None,
    name: str = "egmn",
) -> list[str]:
    """Markdown lines: the targets table, what limits each target missed, the rolling check."""
    own = next((m for m in models if m.name == name), None)
    if own is None:
        return []
    seeds = len(seed_values(own, "mae_point"))
    lines = [
        f"## EGMN against its targets ({seeds} seeds)",
        "",
        "Absolute targets on the mean over the seeds of the served EGMN (its version "
        "directory and the seed runs of `seeds.json`); the others compare seed ranges as the "
        "table above does.",
        "",
        "| target | EGMN | met |",
        "|---|---|---|",
    ]
    missed: list[str] = []
    for key, bound, kind in BOUNDS:
        value = _mean(own, key)
        ok = value is not None and (value <= bound if kind == "max" else value >= bound)
        sign = "<=" if kind == "max" else ">="
        lines.append(
            f"| {HEADERS[key]} {sign} {_fmt(bound, key)} | {_fmt(value, key)} | "
            f"{'yes' if ok else 'no'} |"
        )
        if not ok:
            missed.append(key)
    worst = 0.0
    cells = []
    for key, level in COVERAGE_KEYS.items():
        value = _mean(own, key)
        if value is None:
            continue
        worst = max(worst, abs(value - level))
        cells.append(f"{value:.4f}")
    ok = worst <= COVERAGE_TOLERANCE
    lines.append(
        f"| coverage of 10/50/90 % within {COVERAGE_TOLERANCE} | {' / '.join(cells)} "
        f"(worst off by {worst:.4f}) | {'yes' if ok else 'no'} |"
    )
    if not ok:
        missed.append("coverage")
    for key in AHEAD_ON:
        ahead, how = _place(models, key, name)
        lines.append(f"| ahead on {HEADERS[key]} | {how} | {'yes' if ahead else 'no'} |")
        if not ahead and key not in missed:
            missed.append(key)
    lines.append("")
    if missed:
        lines += ["### What limits the targets missed", ""]
        lines += [f"- {LIMITS[key]}{_on_other_days(key, folds, name)}" for key in missed]
        lines.append("")
    if folds:
        test_figures = {m.name: dict(m.overall) for m in models}
        lines += [
            "### Rolling origin: the ranking on other days",
            "",
            "Every model fitted again (seed 0) on the logs without their last day, then "
            "without their last two: each split's last day tests, the day before validates "
            "(`python -m model_export rolling`, figures in `rolling.json`). Each cell: EGMN's "
            "rank among the models, its figure, and the best model's when it is not EGMN. "
            "The last column is this report's test day (the shipped seed 0).",
            "",
            *rolling_table(folds, (str(test_date), test_figures), name),
            "",
        ]
    return lines
