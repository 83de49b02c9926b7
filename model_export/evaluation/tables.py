"""Markdown and console tables of the figures, and who wins each column."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from model_export.evaluation.scoring import DURATION_GROUPS, LABEL_RANGES, Scored
from model_export.evaluation.seeds import spread, tie, values

# (key, header, lower is better): the headline columns, in order.
HEADLINE: tuple[tuple[str, str, bool], ...] = (
    ("mae_point", "MAE point (s)", True),
    ("xauc_point", "XAUC point", False),
    ("mae_median", "MAE median (s)", True),
    ("nll_positive", "NLL y>0", True),
    ("crps", "CRPS", True),
    ("coverage_0.1", "cov 10%", False),
    ("coverage_0.5", "cov 50%", False),
    ("coverage_0.9", "cov 90%", False),
    ("quick_skip_auc", "skip AUC", False),
    ("quick_skip_brier", "skip Brier", True),
)
GROUP_COLUMNS = ("mae_point", "xauc_point", "nll_positive", "crps", "quick_skip_auc")
COVERAGE_KEYS = {"coverage_0.1": 0.1, "coverage_0.5": 0.5, "coverage_0.9": 0.9}


def _fmt(value: float | None, key: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key.startswith("mae") or key == "crps":
        return f"{value:.3f}"
    return f"{value:.4f}"


def seed_values(m: Scored, key: str, group: str | None = None) -> list[float]:
    """A figure of the shipped model and of its other seeds' runs."""
    shipped = m.overall.get(key) if group is None else m.groups.get(group, {}).get(key)
    return values(shipped, m.seed_runs, key, group)


def _with_spread(m: Scored, key: str, group: str | None = None) -> str:
    """The shipped figure, then half the range over the seeds when there are several."""
    shipped = m.overall.get(key) if group is None else m.groups.get(group, {}).get(key)
    text = _fmt(shipped, key)
    half = spread(seed_values(m, key, group))
    if half is None or text == "-":
        return text
    return f"{text} ±{_fmt(half, key)}"


def _distance(key: str) -> Callable[[float], float]:
    """What is compared in a column: the value, or a coverage's distance to its level,
    negated where higher is better so that lower is always better."""
    if key in COVERAGE_KEYS:
        level = COVERAGE_KEYS[key]
        return lambda v: abs(v - level)
    lower = next(low for k, _, low in HEADLINE if k == key)
    return (lambda v: v) if lower else (lambda v: -v)


def ties_with(models: Sequence[Scored], key: str, best: str) -> list[str]:
    """The models whose seed range in column ``key`` overlaps the best one's: not behind it
    beyond the seed noise."""
    winner = next(m for m in models if m.name == best)
    ref = seed_values(winner, key)
    out = []
    for m in models:
        if m.name == best:
            continue
        if tie(ref, seed_values(m, key), _distance(key)):
            out.append(m.name)
    return out


def _better(key: str, a: float, b: float) -> bool:
    """True when ``a`` is strictly better than ``b`` in column ``key``."""
    if key in COVERAGE_KEYS:
        return abs(a - COVERAGE_KEYS[key]) < abs(b - COVERAGE_KEYS[key])
    lower = next(low for k, _, low in HEADLINE if k == key)
    return a < b if lower else a > b


def best_of(models: Sequence[Scored], key: str) -> str | None:
    """Name of the best model in a column (coverage: closest to its level)."""
    best: Scored | None = None
    for m in models:
        v = m.overall.get(key)
        if v is None or math.isnan(v):
            continue
        if best is None or _better(key, v, best.overall[key]):
            best = m
    return None if best is None else best.name


def headline_table(models: Sequence[Scored]) -> str:
    """The markdown table of the overall figures, one row per model; no timings (they are
    in reports/costs.md), so that a rebuild writes the same table."""
    header = [
        "model",
        "family",
        *(h for _, h, _ in HEADLINE),
        "seeds",
        "ONNX MB",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        cells = [m.name, m.family or "- (offline)"]
        cells += [_with_spread(m, k) for k, _, _ in HEADLINE]
        cells.append(str(1 + len(m.seed_runs)))
        cells.append("-" if m.onnx_mb is None else f"{m.onnx_mb:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_table(models: Sequence[Scored], first: str = "vr") -> str:
    """MAE and XAUC of the point only, ``first`` on top and then from the worst MAE to the
    best: the form the label-distribution (LDA) and generative-regression (GR) papers report
    their KuaiRand figures in, so that ours can be read beside theirs."""
    ranked = sorted(
        (m for m in models if m.name != first),
        key=lambda m: -m.overall.get("mae_point", math.inf),
    )
    head = [m for m in models if m.name == first]
    lines = ["| model | MAE | XAUC |", "|---|---|---|"]
    for m in [*head, *ranked]:
        mae, xauc = _with_spread(m, "mae_point"), _with_spread(m, "xauc_point")
        lines.append(f"| {m.name} | {mae} | {xauc} |")
    return "\n".join(lines)


def group_table(models: Sequence[Scored], key: str) -> str:
    """One metric by duration group (rows = models)."""
    labels_ = [g for g, _, _ in DURATION_GROUPS]
    counts = next((m.groups for m in models if m.groups), {})
    header = ["model", *(f"{g} ({int(counts[g]['rows'])})" if g in counts else g for g in labels_)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        cells = [m.name] + [_with_spread(m, key, g) for g in labels_]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def label_table(models: Sequence[Scored], y: np.ndarray) -> str:
    """NLL by label range, rows = models with a density."""
    header = ["model"]
    for label, lo, hi in LABEL_RANGES:
        header.append(f"{label} ({np.mean((y > lo) & (y <= hi)):.1%})")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        if m.nll_by_label:
            cells = [m.name] + [_fmt(m.nll_by_label.get(g)) for g, _, _ in LABEL_RANGES]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(models: Sequence[Scored], reference: str = "egmn") -> list[str]:
    """One line per headline column: who is best, who is inside its seed range (a tie) and
    where EGMN stands."""
    out = []
    for key, header, _ in HEADLINE:
        best = best_of(models, key)
        if best is None:
            continue
        winner = next(m for m in models if m.name == best)
        tied = ties_with(models, key, best)
        figure = _with_spread(winner, key)
        egmn = next((m for m in models if m.name == reference), None)
        if best == reference:
            line = f"- {header}: EGMN is best ({figure})"
        else:
            line = f"- {header}: **{best} is best** ({figure})"
        if tied:
            line += "; tied within the seed spread: " + ", ".join(tied)
        if best != reference and egmn is not None and key in egmn.overall:
            verdict = "a tie" if reference in tied else "behind beyond the seed spread"
            line += f"; EGMN {_with_spread(egmn, key)}, {verdict}"
        out.append(line + ".")
    return out


# The columns of the console table of a run and of reports/egmn.md.
METRICS_COLUMNS = (
    ("mae_point", "MAE point"),
    ("xauc_point", "XAUC point"),
    ("mae_median", "MAE median"),
    ("xauc_mean", "XAUC mean"),
    ("nll", "NLL"),
    ("nll_positive", "NLL y>0"),
    ("crps", "CRPS"),
    ("coverage_0.1", "cov 10%"),
    ("coverage_0.5", "cov 50%"),
    ("coverage_0.9", "cov 90%"),
    ("quick_skip_auc", "skip AUC"),
    ("quick_skip_brier", "skip Brier"),
)


def _cell(row: Mapping[str, float], key: str) -> str:
    value = row.get(key)
    return "-" if value is None else f"{value:.4f}"


def metrics_table(rows: Mapping[str, Mapping[str, float]], markdown: bool = False) -> str:
    """One line per estimator, one column per metric; '-' where a metric does not apply."""
    header = ["model", *(label for _, label in METRICS_COLUMNS)]
    body = [[name, *(_cell(r, key) for key, _ in METRICS_COLUMNS)] for name, r in rows.items()]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(line) + " |" for line in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*line) for line in [header, *body])
