"""Post-processor benchmark: the vectorized EGM path against a per-row brentq loop.

For N rows of a K=10 EGM it times what one ranking request asks of the distribution:
the mean, 5 quantiles and 3 interval masses. The reference does the same row by row
with ``scipy.optimize.brentq`` on the mixture CDF built from ``scipy.special.ndtr``
(vectorized over the K components, so the reference is not handicapped). The loop is
run on a subset and scaled to N rows, since it is linear in rows; both figures and
their ratio come from the same run on the same machine.

    python -m loadtest.bench_distributions [--rows 10000] [--reference-rows 300]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr

from service.distributions import EGM

LEVELS = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
EDGES = np.array([[0.0, 3.0], [3.0, 10.0], [10.0, np.inf]])


def make_params(n: int, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Parameters shaped like a trained EGMN's on watch-time logs (seconds)."""
    rng = np.random.default_rng(seed)
    return {
        "lambda": rng.lognormal(np.log(0.7), 0.5, n),
        "weights": rng.dirichlet(np.ones(k + 1), n),
        "mu": rng.lognormal(2.5, 1.0, (n, k)),
        "sigma": rng.lognormal(1.8, 0.7, (n, k)),
    }


def vectorized(params: dict[str, np.ndarray]) -> None:
    dist = EGM.from_params(params)
    dist.mean()
    dist.icdf(LEVELS)
    dist.interval_mass(EDGES)


def per_row(params: dict[str, np.ndarray], rows: int) -> None:
    lam, w, mu, sigma = params["lambda"], params["weights"], params["mu"], params["sigma"]
    for i in range(rows):
        a = -mu[i] / sigma[i]
        z = ndtr(-a)

        def cdf(t: float, i: int = i, a: np.ndarray = a, z: np.ndarray = z) -> float:
            g = (ndtr((t - mu[i]) / sigma[i]) - ndtr(a)) / z
            return float(w[i, 0] * -np.expm1(-lam[i] * t) + w[i, 1:] @ g)

        phi = np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)
        _mean = w[i, 0] / lam[i] + w[i, 1:] @ (mu[i] + sigma[i] * phi / z)
        hi = 1.0
        while cdf(hi) < LEVELS[-1]:
            hi *= 2.0
        for q in LEVELS:
            brentq(lambda t, q=q: cdf(t) - q, 0.0, hi, xtol=1e-6, rtol=1e-9)
        c3, c10 = cdf(3.0), cdf(10.0)
        _mass = (c3, c10 - c3, 1.0 - c10)


def best_of(fn: Callable[[], None], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--reference-rows", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    params = make_params(args.rows, args.components)
    t_vec = best_of(lambda: vectorized(params), args.repeats)
    sub = min(args.reference_rows, args.rows)
    t_ref_sub = best_of(lambda: per_row(params, sub), 1)
    t_ref = t_ref_sub * args.rows / sub

    print(f"machine: {os.cpu_count()} cores; {args.rows} egm rows, K={args.components}")
    print("work per row: mean, 5 quantiles, 3 interval masses")
    print(f"{'path':<34}{'time':>12}{'rows/s':>14}")
    print(
        f"{'vectorized numpy (best of runs)':<34}{t_vec * 1e3:>10.1f} ms{args.rows / t_vec:>14,.0f}"
    )
    # Say whether the loop's time was measured on every row or scaled up from a subset.
    label = f"per-row brentq ({sub} rows{', scaled' if sub < args.rows else ''})"
    print(f"{label:<34}{t_ref * 1e3:>10.1f} ms{args.rows / t_ref:>14,.0f}")
    print(
        f"speed-up: {t_ref / t_vec:.0f}x (target >= 100x); vectorized under 20 ms: {t_vec < 0.02}"
    )
    # One row, as a single ranking request sees it: fixed per-call cost, not throughput.
    one = make_params(1, args.components, seed=1)
    t_one = best_of(lambda: vectorized(one), 200)
    t_one_ref = best_of(lambda: per_row(one, 1), 20)
    print(f"1 row: vectorized {t_one * 1e3:.2f} ms, per-row brentq {t_one_ref * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
