"""Markdown and console tables of the figures, and who wins each column."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from model_export.evaluation.scoring import DURATION_GROUPS, LABEL_RANGES, Scored

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
    """The markdown table of the overall figures, one row per model."""
    header = [
        "model",
        "family",
        *(h for _, h, _ in HEADLINE),
        "train (s)",
        "train CPU (s)",
        "ONNX MB",
        "ONNX rows/s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        cells = [m.name, m.family or "- (offline)"]
        cells += [_fmt(m.overall.get(k), k) for k, _, _ in HEADLINE]
        cells.append("-" if m.train_seconds is None else f"{m.train_seconds:.0f}")
        cells.append("-" if m.train_cpu_seconds is None else f"{m.train_cpu_seconds:.0f}")
        cells.append("-" if m.onnx_mb is None else f"{m.onnx_mb:.2f}")
        cells.append("-" if m.rows_per_s is None else f"{m.rows_per_s:,.0f}")
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
        mae, xauc = m.overall.get("mae_point"), m.overall.get("xauc_point")
        lines.append(f"| {m.name} | {_fmt(mae, 'mae_point')} | {_fmt(xauc, 'xauc_point')} |")
    return "\n".join(lines)


def group_table(models: Sequence[Scored], key: str) -> str:
    """One metric by duration group (rows = models)."""
    labels_ = [g for g, _, _ in DURATION_GROUPS]
    counts = next((m.groups for m in models if m.groups), {})
    header = ["model", *(f"{g} ({int(counts[g]['rows'])})" if g in counts else g for g in labels_)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in models:
        cells = [m.name] + [_fmt(m.groups.get(g, {}).get(key), key) for g in labels_]
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
    """One line per headline column: who is best, and whether EGMN is."""
    out = []
    for key, header, _ in HEADLINE:
        best = best_of(models, key)
        if best is None:
            continue
        egmn = next((m for m in models if m.name == reference), None)
        if best == reference:
            out.append(f"- {header}: EGMN is best.")
        elif egmn is not None and key in egmn.overall:
            winner = next(m for m in models if m.name == best)
            out.append(
                f"- {header}: **{best} wins** ({_fmt(winner.overall[key], key)} vs EGMN "
                f"{_fmt(egmn.overall[key], key)})."
            )
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
