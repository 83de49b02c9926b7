"""Whether a server answers the same numbers as this service, under the peers' output names.

A throughput figure means nothing for a server that computes something else, so every peer's
answer on the benchmark's rows is held against this service's in-process answer before the
peer is loaded, and the worst output goes into the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.runtime.prediction import Prediction

RTOL, ATOL = 1e-6, 1e-9


def _by_peer_name(
    mean: Any, quick_skip: Any, masses: np.ndarray, quantiles: np.ndarray
) -> dict[str, np.ndarray]:
    """The outputs the peers answer (``loadtest.peers.egm_numpy.OUTPUTS``), by their names."""
    return {
        "expected_s": np.asarray(mean),
        "p_le_3s": np.asarray(quick_skip),
        "mass_0_3": masses[:, 0],
        "mass_3_10": masses[:, 1],
        "mass_10_inf": masses[:, 2],
        "q10_s": quantiles[:, 0],
        "q50_s": quantiles[:, 1],
        "q90_s": quantiles[:, 2],
    }


def reference_numbers(result: Prediction) -> dict[str, np.ndarray]:
    """This service's in-process answer, for three quantiles and three intervals."""
    assert result.quantiles is not None and result.interval_mass is not None
    return _by_peer_name(
        result.mean, result.quick_skip_prob, result.interval_mass, result.quantiles
    )


def service_numbers(answer: dict[str, Any]) -> dict[str, np.ndarray]:
    """The same outputs from a native answer of the running service."""
    masses = np.asarray(answer["intervals"]["mass"])
    quantiles = np.asarray(answer["quantiles"]["values_s"])
    return _by_peer_name(
        answer["expected_watch_time_s"], answer["quick_skip_prob"], masses, quantiles
    )


def worst_difference(got: dict[str, Any], want: dict[str, np.ndarray]) -> tuple[str, float]:
    """The output farthest from ``want``, in units of the tolerance (<= 1 passes)."""
    worst = ("", 0.0)
    for name, expected in want.items():
        value = np.asarray(got[name], dtype=np.float64)
        if value.shape != expected.shape:
            return name, float("inf")
        excess = np.abs(value - expected) / (ATOL + RTOL * np.abs(expected))
        if float(excess.max()) > worst[1]:
            worst = (name, float(excess.max()))
    return worst
