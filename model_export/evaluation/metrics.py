"""Offline metrics of a predictive watch-time distribution, all in seconds.

Definitions (stored next to the numbers in the manifest):
- ``xauc``: over all pairs of rows with *different* labels, the share ordered the same way by
  the prediction; pairs with tied predictions count one half, pairs with tied labels are left
  out. Exact, O(n log n) with a Fenwick tree over prediction ranks.
- ``nll``: mean of ``-log p(y)``, density in 1/s; with a point mass at 0, a label of exactly 0
  scores ``-log P(T = 0)`` (mixed measure), so NLLs with and without the atom differ by
  construction on those rows.
- ``nll_positive``: the same over labels above 0 only, a density on both sides, so models
  with and without the atom compare there.
- ``crps``: ``integral (F(t) - 1{t >= y})^2 dt``, per row by trapezoid on a row-specific grid.
- ``coverage_q``: share of labels at or below the predicted q-quantile (ideal: q).
- ``quick_skip_auc`` / ``quick_skip_brier``: of ``P(T <= threshold)`` against ``y <= threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.distributions import Distribution

METRIC_NOTES = {
    "mae_point": "mean |point_s - y|, point_s = w0/lambda + sum_k w_k mu_k (the paper's)",
    "xauc_point": "pairs with distinct labels ordered like point_s; tied predictions count 1/2",
    "mae_median": "mean |median - y|",
    "xauc_mean": "XAUC of expected_watch_time_s (exact mean)",
    "nll": "mean -log p(y), density per second; y == 0 with an atom scores -log p0",
    "nll_positive": "mean -log density over rows with y > 0 (comparable with and without atom)",
    "crps": "mean integral (F(t) - 1{t >= y})^2 dt, seconds",
    "coverage_q": "share of y <= predicted q-quantile",
    "quick_skip": "P(T <= threshold) vs 1{y <= threshold}: ROC AUC (ties 1/2) and Brier",
}


def mae(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(pred - y)))


def xauc(pred: np.ndarray, y: np.ndarray) -> float:
    """Exact XAUC (see module docstring for ties); O(n log n)."""
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    ranks = np.unique(pred, return_inverse=True)[1].astype(np.int64) + 1
    m = int(ranks.max()) if n else 0
    tree = np.zeros(m + 1, dtype=np.int64)

    def prefix(i: int) -> int:
        s = 0
        while i > 0:
            s += int(tree[i])
            i -= i & -i
        return s

    def add(i: int) -> None:
        while i <= m:
            tree[i] += 1
            i += i & -i

    order = np.argsort(y, kind="stable")
    ys, rs = y[order], ranks[order]
    starts = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
    ends = np.r_[starts[1:], n]
    score, pairs, seen = 0.0, 0, 0
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        for r in rs[a:b].tolist():
            less = prefix(r - 1)
            score += less + 0.5 * (prefix(r) - less)
        pairs += seen * (b - a)
        for r in rs[a:b].tolist():
            add(r)
        seen += b - a
    return score / pairs if pairs else float("nan")


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney ROC AUC with average ranks (ties count one half)."""
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    del values
    first = np.cumsum(counts) - counts
    avg_rank = first + (counts + 1) / 2.0
    rank_sum = avg_rank[inverse][pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def crps(dist: Distribution, y: np.ndarray, chunk: int = 2048) -> float:
    """Mean CRPS by trapezoid: F^2 on [0, y] (grid dense near 0), (1-F)^2 on [y, y + 2e4]."""
    lower = np.linspace(0.0, 1.0, 65) ** 2
    upper = np.r_[0.0, np.geomspace(1e-2, 2e4, 160)]
    total = 0.0
    n = y.size
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        part = _slice(dist, a, b)
        yc = y[a:b, None]
        t_lo = yc * lower[None, :]
        f_lo = part.cdf(t_lo)
        t_hi = yc + upper[None, :]
        f_hi = part.cdf(t_hi)
        total += float(np.trapezoid(f_lo**2, t_lo, axis=1).sum())
        total += float(np.trapezoid((1.0 - f_hi) ** 2, t_hi, axis=1).sum())
    return total / n


def _slice(dist: Distribution, a: int, b: int) -> Distribution:
    """Rows a..b of a prediction (any family; shared constants such as bucket edges stay)."""
    return dist.take(np.arange(a, b))


def coverage(dist: Distribution, y: np.ndarray, levels: Sequence[float]) -> dict[str, float]:
    """Share of labels at or below each predicted quantile."""
    q = dist.icdf(np.asarray(levels, dtype=np.float64))
    return {f"coverage_{lv:g}": float(np.mean(y <= q[:, i])) for i, lv in enumerate(levels)}


def evaluate_distribution(
    dist: Distribution, y: np.ndarray, threshold_s: float = 3.0
) -> dict[str, float]:
    """Every offline metric of a predictive distribution (any family) against labels in seconds."""
    point = dist.point()
    mean = dist.mean()
    median = dist.icdf(0.5)
    qs = dist.quick_skip_prob(threshold_s)
    log_p = dist.log_prob(y[:, None])[:, 0]
    skip = y <= threshold_s
    out = {
        "mae_point": mae(point, y),
        "xauc_point": xauc(point, y),
        "mae_median": mae(median, y),
        "mae_mean": mae(mean, y),
        "xauc_mean": xauc(mean, y),
        "nll": float(-np.mean(log_p)),
        "nll_positive": float(-np.mean(log_p[y > 0])),
        "crps": crps(dist, y),
        **coverage(dist, y, (0.1, 0.5, 0.9)),
        "quick_skip_auc": roc_auc(qs, skip),
        "quick_skip_brier": float(np.mean((qs - skip) ** 2)),
        "mean_point_s": float(np.mean(point)),
        "mean_expected_s": float(np.mean(mean)),
    }
    return out


def evaluate_point(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Metrics of a point-only estimator (a baseline without a distribution)."""
    return {"mae_point": mae(pred, y), "xauc_point": xauc(pred, y)}
