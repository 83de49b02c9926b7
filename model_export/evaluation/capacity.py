"""What the EGM family can reach without features: a diagnostic of what limits NLL (y > 0).

The conditional models are compared on the validation day elsewhere; here each video-duration
group's views with y > 0 of the training days are fitted *without features*, by maximum
likelihood, and scored on the same group of the validation day:

- ``histogram``: the softmax baseline's 20 buckets (0.5 s to 800 s, log-spaced, and
  [0, 0.5 s)), each bucket's share of the group's views (plus half a view) over its width;
- ``egm_free``: the exponential and K truncated Gaussians with free means;
- ``egm_bound``: the same with the paper's bound ``mu_k >= 1/lambda`` (EGMN's heads).

If the family with free means fits a group as well as the histogram but the bound costs
tenths of a nat, the bound, not the family, is what the conditional model pays for. The fits
run in float64 with a fixed seed, start and step count, so the figures repeat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from model_export.models.egm import EGMParams, log_prob

EDGES_S = np.r_[0.0, np.geomspace(0.5, 800.0, 20)]
"""The softmax baseline's bucket edges (``BaselineConfig``: 20 buckets, 0.5 s to 800 s)."""

COLUMNS = ("histogram", "egm_free", "egm_bound")


def histogram_nll(train: np.ndarray, test: np.ndarray, edges: np.ndarray = EDGES_S) -> float:
    """Mean -log density of ``test`` under the training shares of ``edges``' buckets (views
    past the last edge fall in the last bucket, as the softmax baseline's top bucket)."""
    top = float(edges[-1]) * (1.0 - 1e-9)
    counts = np.histogram(np.clip(train, 0.0, top), edges)[0] + 0.5
    share = counts / counts.sum()
    bucket = np.searchsorted(edges, np.clip(test, 0.0, top), side="right") - 1
    return float(-np.mean(np.log(share[bucket] / np.diff(edges)[bucket])))


def egm_nll(
    train: np.ndarray,
    test: np.ndarray,
    n_gaussians: int = 10,
    bound: bool = False,
    scale: float = 10.0,
    steps: int = 1500,
    seed: int = 0,
) -> float:
    """Mean -log density (per second) of ``test`` under the EGM fitted to ``train`` by
    maximum likelihood (Adam, ``steps`` full-batch steps, in ``scale``-second units)."""
    torch.manual_seed(seed)
    x = torch.tensor(train / scale, dtype=torch.float64)
    x_test = torch.tensor(test / scale, dtype=torch.float64)
    k = n_gaussians
    levels = torch.linspace(0.05, 0.95, k, dtype=torch.float64)
    start = torch.quantile(x, levels)
    mu = torch.nn.Parameter(start.clone())
    log_sigma = torch.nn.Parameter(
        torch.full((k,), math.log(2.0 * float(x.std()) / k), dtype=torch.float64)
    )
    logits = torch.nn.Parameter(torch.zeros(k + 1, dtype=torch.float64))
    log_lam = torch.nn.Parameter(torch.tensor(-math.log(float(x.mean())), dtype=torch.float64))
    optimizer = torch.optim.Adam([mu, log_sigma, logits, log_lam], lr=0.03)

    def log_density(values: torch.Tensor) -> torch.Tensor:
        n = values.shape[0]
        lam = log_lam.exp()
        means = torch.nn.functional.softplus(mu) + 1.0 / lam if bound else mu
        params = EGMParams(
            lam=lam.expand(n),
            log_w=torch.log_softmax(logits, 0).expand(n, k + 1),
            mu=means.expand(n, k),
            sigma=log_sigma.exp().expand(n, k),
            point_mass=False,
        )
        return log_prob(params, values)

    for _ in range(steps):
        optimizer.zero_grad()
        loss = -log_density(x).mean()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    with torch.no_grad():
        return float(-(log_density(x_test) - math.log(scale)).mean())


def capacity(
    train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], steps: int = 1500
) -> dict[str, dict[str, float]]:
    """Per group (``train[g]``, ``test[g]``: watch times > 0 in seconds), each column's
    validation NLL and the group's row count; ``all`` is the row-weighted mean."""
    out: dict[str, dict[str, float]] = {}
    for group, fit_on in train.items():
        scored = test[group]
        if fit_on.size < 50 or scored.size == 0:
            continue
        out[group] = {
            "rows": float(scored.size),
            "histogram": histogram_nll(fit_on, scored),
            "egm_free": egm_nll(fit_on, scored, steps=steps),
            "egm_bound": egm_nll(fit_on, scored, bound=True, steps=steps),
        }
    total = sum(r["rows"] for r in out.values())
    out["all"] = {"rows": total} | {
        c: sum(r[c] * r["rows"] for r in out.values()) / total for c in COLUMNS
    }
    return out


def capacity_table(results: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The markdown table of :func:`capacity`'s figures."""
    lines = [
        "| duration group | validation rows y > 0 | histogram (softmax's 20 buckets) | "
        "EGM, free means | EGM, means >= 1/lambda (EGMN's bound) |",
        "|---|---|---|---|---|",
    ]
    for group, r in results.items():
        name = "all (row-weighted)" if group == "all" else group
        lines.append(
            f"| {name} | {int(r['rows'])} | {r['histogram']:.4f} | {r['egm_free']:.4f} | "
            f"{r['egm_bound']:.4f} |"
        )
    return lines
