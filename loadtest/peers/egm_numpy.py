"""What a competent team writes by hand for EGMN's numbers: scipy's ``ndtr`` and bisection.

The peers share this module, so that they differ only in how they serve HTTP. It takes the
ONNX graph's outputs (seconds; absolute weights with ``p0 + sum(weights) == 1``) and returns,
per row, the exact mean, P(T <= 3 s), the masses of [0, 3), [3, 10) and [10, inf), and the
quantiles 0.1/0.5/0.9 by 40 steps of vectorized bisection: the outputs the benchmark asks
of every server, the service included.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from scipy.special import log_ndtr, ndtr

LEVELS = np.array([0.1, 0.5, 0.9])
BISECTION_STEPS = 40
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)

OUTPUTS = (
    "expected_s",
    "p_le_3s",
    "mass_0_3",
    "mass_3_10",
    "mass_10_inf",
    "q10_s",
    "q50_s",
    "q90_s",
)


def server_arguments() -> argparse.Namespace:
    """Every peer's command line: ``MODEL.onnx --port PORT [--intra-op 2]``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("onnx")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--intra-op", type=int, default=2)
    return parser.parse_args()


def load_session(path: str, intra_op_threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def _survival(t, w0, lam, a, inv_sigma, wz):  # type: ignore[no-untyped-def]
    """P(T > t) of the continuous part, for ``t`` of shape (n, q)."""
    z = a[:, None, :] - t[:, :, None] * inv_sigma[:, None, :]
    return w0[:, None] * np.exp(-lam[:, None] * t) + np.einsum("nqk,nk->nq", ndtr(z), wz)


def summarize(outs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    w = outs["weights"].astype(np.float64)
    lam = outs["lambda"].astype(np.float64)
    mu = outs["mu"].astype(np.float64)
    sigma = outs["sigma"].astype(np.float64)
    p0 = outs["p0"].astype(np.float64)
    total = p0 + w.sum(axis=1)  # 1 up to the softmax's rounding
    w, p0 = w / total[:, None], p0 / total
    inv_sigma = 1.0 / sigma
    a = mu * inv_sigma
    log_z = log_ndtr(a)  # log P(N(mu, sigma) > 0): the truncation's normaliser
    wz = w[:, 1:] * np.exp(-log_z)
    w0 = w[:, 0]
    mills = np.exp(-0.5 * a * a - _LOG_SQRT_2PI - log_z)
    expected = w0 / lam + np.einsum("nk,nk->n", w[:, 1:], mu + sigma * mills)
    n = w.shape[0]
    surv = _survival(np.broadcast_to(np.array([3.0, 10.0]), (n, 2)), w0, lam, a, inv_sigma, wz)
    cdf3 = 1.0 - surv[:, 0]
    hi = np.maximum((np.maximum(mu, 0.0) + 10.0 * sigma).max(axis=1), 40.0 / lam)
    hi = np.repeat(hi[:, None], LEVELS.size, axis=1)
    lo = np.zeros_like(hi)
    target = 1.0 - LEVELS[None, :]  # F(t) >= q  <=>  S(t) <= 1 - q
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        above = _survival(mid, w0, lam, a, inv_sigma, wz) > target
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    q = 0.5 * (lo + hi)
    return {
        "expected_s": expected,
        "p_le_3s": cdf3,
        "mass_0_3": cdf3,
        "mass_3_10": surv[:, 0] - surv[:, 1],
        "mass_10_inf": np.ascontiguousarray(surv[:, 1]),
        "q10_s": np.ascontiguousarray(q[:, 0]),
        "q50_s": np.ascontiguousarray(q[:, 1]),
        "q90_s": np.ascontiguousarray(q[:, 2]),
    }


def predict(
    session: ort.InferenceSession, categorical: np.ndarray, numeric: np.ndarray
) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    outs = dict(
        zip(
            names, session.run(names, {"categorical": categorical, "numeric": numeric}), strict=True
        )
    )
    return summarize(outs)
