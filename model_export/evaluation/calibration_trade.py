"""What the calibration's coverage term costs in likelihood: one network, several weights.

EGMN's calibration (:func:`model_export.training.egmn.fit_calibration`) fits a few
constants on the validation day with the network frozen, minimising the NLL plus
``coverage_weight`` times the squared coverage error summed over the levels 0.05..0.95. The
weight the shipped models use (100) keeps the 10/50/90 % quantiles honest; a weight of 0 is
the likelihood alone. ``python -m model_export tune --calibration NAME`` refits that
calibration on the first half of the validation day for each weight of :data:`WEIGHTS`,
keeping the trained network of configuration ``NAME``, and scores the second half; the
tuning report prints the figures, so that the trade between NLL (and CRPS) and coverage is
measured, not guessed. The test day is not read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from model_export.data.prepared import Prepared
from model_export.evaluation.metrics import evaluate_distribution
from model_export.evaluation.tuning import _part, halves
from model_export.training.egmn import EGMNRun, fit_calibration, predict_distribution

WEIGHTS = (0.0, 1.0, 10.0, 30.0, 100.0, 300.0)
"""Coverage weights tried; 100 is the one every shipped EGMN was calibrated with."""

SHIPPED_WEIGHT = 100.0
LEVELS = (0.1, 0.5, 0.9)
KEYS = ("nll_positive", "crps", "mae_point", "quick_skip_brier")


def calibration_trade(
    prepared: Prepared, run: EGMNRun, weights: Sequence[float] = WEIGHTS
) -> dict[str, dict[str, float]]:
    """Second-half figures of ``run``'s network, uncalibrated and under each weight."""
    first, second = halves(len(prepared.validation))
    fit_rows = _part(prepared.validation, first)
    scored = _part(prepared.validation, second)
    y = scored.y.double().numpy()
    out: dict[str, dict[str, float]] = {}
    dist = predict_distribution(run.serving(calibrated=False), scored, run.config.point)
    out["uncalibrated"] = _kept(evaluate_distribution(dist, y))
    for weight in weights:
        run.calibration = fit_calibration(run.model, fit_rows, run.config, coverage_weight=weight)
        dist = predict_distribution(run.serving(calibrated=True), scored, run.config.point)
        out[f"{weight:g}"] = _kept(evaluate_distribution(dist, y))
    return out


def _kept(metrics: Mapping[str, float]) -> dict[str, float]:
    kept = {k: float(metrics[k]) for k in KEYS}
    errors = [abs(metrics[f"coverage_{lv:g}"] - lv) for lv in LEVELS]
    for lv in LEVELS:
        kept[f"coverage_{lv:g}"] = float(metrics[f"coverage_{lv:g}"])
    kept["worst_coverage_error"] = float(max(errors))
    return kept


def trade_table(figures: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The markdown table of :func:`calibration_trade`'s figures."""
    lines = [
        "| calibration | NLL y>0 | CRPS | cov 10% | cov 50% | cov 90% | worst coverage error "
        "| skip Brier |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in figures.items():
        if key == "uncalibrated":
            name = "none (the network's own parameters)"
        else:
            name = f"coverage weight {key}" + (" (shipped)" if float(key) == SHIPPED_WEIGHT else "")
        lines.append(
            f"| {name} | {r['nll_positive']:.4f} | {r['crps']:.3f} | {r['coverage_0.1']:.4f} | "
            f"{r['coverage_0.5']:.4f} | {r['coverage_0.9']:.4f} | "
            f"{r['worst_coverage_error']:.4f} | {r['quick_skip_brier']:.4f} |"
        )
    return lines
