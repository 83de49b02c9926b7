"""Prometheus metrics: the names, labels and buckets dashboards and alerts are built on.

The names and labels are a contract (a renamed series silently breaks an alert), so they are
all declared here, once. ``python -m service`` always runs in prometheus-client's
multiprocess mode (it points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any
worker imports this module), so one code path serves one worker or many: every process
writes its own memory-mapped files and ``/metrics`` merges them. Without that variable (an
app embedded in a test or another host) the metrics live in this module's own registry.

Every label combination that can occur is created at zero when a model is registered, so
``rate()`` and alerts work before the first event.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds, from a quarter millisecond (one small onnxruntime run) to ten seconds (overload)."""

ROW_BUCKETS = tuple(float(2**i) for i in range(15))
"""Rows per request or batch: 1, 2, 4, ... 16384 (beyond the default request limit)."""

WATCH_TIME_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
"""Predicted expected watch time, seconds: dense around the quick-skip threshold."""

PROBABILITY_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
"""Predicted quick-skip probability."""

ENDPOINT_STATUSES: dict[str, tuple[str, ...]] = {
    "predict": ("200", "404", "413", "415", "422", "429", "499", "503", "504", "500"),
    "infer": ("200", "400", "404", "413", "415", "429", "499", "503", "504", "500"),
    "grpc": ("200", "400", "404", "413", "429", "499", "503", "504", "500"),
}
"""Each endpoint (native ``predict``, v2 ``infer``, gRPC ``ModelInfer``) and every status it
can answer. A gRPC request is counted under the HTTP status its error has on the v2 routes
(INVALID_ARGUMENT 400 or, over the row limit, 413; NOT_FOUND 404; RESOURCE_EXHAUSTED 429;
UNAVAILABLE 503; DEADLINE_EXCEEDED 504), so one alert reads every protocol.

499 is no answer: the client disconnected first (counted apart, so it trips no 5xx alert).
"""

REJECTION_REASONS = ("queue_full", "deadline", "invalid", "too_large")

CONNECTION_CLOSE_REASONS = (
    "header_timeout",
    "body_timeout",
    "header_too_large",
    "idle_evicted",
    "over_capacity",
)
"""Why the server closed a connection itself (see ``service.server``)."""

UNKNOWN_MODEL = "unknown"
"""The ``model`` label of a request naming no loaded model (bounds the label's values)."""

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "watchtime_requests",
    "Prediction requests answered, by model, endpoint and HTTP status.",
    ("model", "endpoint", "status"),
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "watchtime_request_duration_seconds",
    "Time from a prediction request's arrival to its answer.",
    ("model", "endpoint"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DURATION = Histogram(
    "watchtime_queue_duration_seconds",
    "Time a request's rows waited in the batcher queue before their onnxruntime run.",
    ("model",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
INFERENCE_DURATION = Histogram(
    "watchtime_inference_duration_seconds",
    "Duration of one onnxruntime run (one batch).",
    ("model",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
POSTPROCESS_DURATION = Histogram(
    "watchtime_postprocess_duration_seconds",
    "Duration of one request's distribution post-processing.",
    ("model",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_ROWS = Histogram(
    "watchtime_batch_rows",
    "Rows in one onnxruntime run.",
    ("model",),
    buckets=ROW_BUCKETS,
    registry=REGISTRY,
)
REQUEST_ROWS = Histogram(
    "watchtime_request_rows",
    "Rows in one prediction request.",
    ("model",),
    buckets=ROW_BUCKETS,
    registry=REGISTRY,
)
ROWS = Counter("watchtime_rows", "Rows run through onnxruntime.", ("model",), registry=REGISTRY)
BATCHES = Counter("watchtime_batches", "onnxruntime runs (batches).", ("model",), registry=REGISTRY)
QUEUE_ROWS = Gauge(
    "watchtime_queue_rows",
    "Rows waiting in the batcher queue.",
    ("model",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
INFLIGHT = Gauge(
    "watchtime_inflight_requests",
    "Prediction requests being served.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
REJECTED = Counter(
    "watchtime_rejected",
    "Prediction requests refused, by reason.",
    ("model", "reason"),
    registry=REGISTRY,
)
MODEL_INFO = Gauge(
    "watchtime_model_info",
    "1 for each loaded model version, 0 once it is unloaded or replaced.",
    ("model", "version", "family"),
    multiprocess_mode="max",
    registry=REGISTRY,
)
MODEL_LOAD_FAILURES = Counter(
    "watchtime_model_load_failures",
    "Model versions refused when loading (at start-up, by a poll or a load request), summed "
    "over the workers that tried.",
    ("model", "version"),
    registry=REGISTRY,
)
MODEL_REFUSED = Gauge(
    "watchtime_model_refused",
    "1 for each model version found in the repository whose last load was refused and that "
    "is not served; 0 otherwise.",
    ("model", "version"),
    multiprocess_mode="max",
    registry=REGISTRY,
)
OPEN_CONNECTIONS = Gauge(
    "watchtime_open_connections",
    "HTTP connections open, over all workers.",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
CONNECTIONS_CLOSED = Counter(
    "watchtime_connections_closed",
    "Connections the server closed to protect itself (slow or silent clients, oversized "
    "headers, the connection cap), by reason.",
    ("reason",),
    registry=REGISTRY,
)
PREDICTED_WATCH_TIME = Histogram(
    "watchtime_predicted_watch_time_seconds",
    "Served expected watch time per row (drift of the model's output).",
    ("model",),
    buckets=WATCH_TIME_BUCKETS,
    registry=REGISTRY,
)
PREDICTED_QUICK_SKIP = Histogram(
    "watchtime_predicted_quick_skip_prob",
    "Served quick-skip probability per row (drift of the model's output).",
    ("model",),
    buckets=PROBABILITY_BUCKETS,
    registry=REGISTRY,
)

FEATURE_LOOKUP_DURATION = Histogram(
    "watchtime_feature_lookup_duration_seconds",
    "Time to fill one request's missing columns from the feature store, by store.",
    ("store",),
    buckets=(0.00005, 0.0001, *LATENCY_BUCKETS),
    registry=REGISTRY,
)
FEATURE_LOOKUP_HITS = Counter(
    "watchtime_feature_lookup_hits",
    "Rows whose entity id the feature store holds, by entity (user, video).",
    ("entity",),
    registry=REGISTRY,
)
FEATURE_LOOKUP_MISSES = Counter(
    "watchtime_feature_lookup_misses",
    "Rows whose entity id the feature store does not hold (unknown, null or not an id): "
    "served with that entity's columns missing, by entity.",
    ("entity",),
    registry=REGISTRY,
)
FEATURE_LOOKUP_ERRORS = Counter(
    "watchtime_feature_lookup_errors",
    "Feature store lookups that failed (timeout, store unavailable, no tables published): "
    "the rows went on with missing columns, or 503 with WATCHTIME_FEATURE_STORE_REQUIRED.",
    ("store", "reason"),
    registry=REGISTRY,
)
FEATURE_LOOKUP_ERROR_REASONS = ("timeout", "unavailable", "no_tables")

_PER_MODEL = (
    QUEUE_DURATION,
    INFERENCE_DURATION,
    POSTPROCESS_DURATION,
    BATCH_ROWS,
    REQUEST_ROWS,
    ROWS,
    BATCHES,
    QUEUE_ROWS,
    PREDICTED_WATCH_TIME,
    PREDICTED_QUICK_SKIP,
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def register_models(models: Iterable[tuple[str, str, str]]) -> None:
    """Create every series of each ``(name, version, family)`` at zero; model_info at 1."""
    names = {UNKNOWN_MODEL}
    for name, version, family in models:
        names.add(name)
        MODEL_INFO.labels(name, version, family).set(1)
    for name in sorted(names):
        for endpoint, statuses in ENDPOINT_STATUSES.items():
            REQUEST_DURATION.labels(name, endpoint)
            for status in statuses:
                REQUESTS.labels(name, endpoint, status)
        for reason in REJECTION_REASONS:
            REJECTED.labels(name, reason)
        if name != UNKNOWN_MODEL:
            for metric in _PER_MODEL:
                metric.labels(name)
    INFLIGHT.inc(0)
    OPEN_CONNECTIONS.inc(0)
    for reason in CONNECTION_CLOSE_REASONS:
        CONNECTIONS_CLOSED.labels(reason)


def register_load_status(status: Iterable[tuple[str, str, bool]]) -> None:
    """The load-failure series of each ``(name, version, failed)`` found at start-up: the
    counter exists (at zero, or already counted), ``watchtime_model_refused`` says which."""
    for name, version, failed in status:
        MODEL_LOAD_FAILURES.labels(name, version)
        MODEL_REFUSED.labels(name, version).set(1 if failed else 0)


def register_feature_store(store: str, entities: Iterable[str]) -> None:
    """The feature store's series at zero: its duration, hits and misses per entity, errors
    per reason."""
    FEATURE_LOOKUP_DURATION.labels(store)
    for entity in entities:
        FEATURE_LOOKUP_HITS.labels(entity)
        FEATURE_LOOKUP_MISSES.labels(entity)
    for reason in FEATURE_LOOKUP_ERROR_REASONS:
        FEATURE_LOOKUP_ERRORS.labels(store, reason)


def observe_many(histogram: Histogram, values: npt.NDArray[np.float64]) -> None:
    """Observe every value of an array at once: one increment per bucket, not per value.

    prometheus-client observes one value per call; drift histograms see every served row, so
    the bucket counts come from one vectorized search instead of a Python loop over rows.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    counts = np.bincount(np.searchsorted(bounds, finite, side="left"), minlength=bounds.size)
    for i in np.flatnonzero(counts):
        histogram._buckets[int(i)].inc(float(counts[i]))
    histogram._sum.inc(float(finite.sum()))


def exposition() -> tuple[bytes, str]:
    """The ``/metrics`` body and content type: every worker's values when multiprocess."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def process_exiting() -> None:
    """Drop this process's live gauges (queue rows, in flight) from the merged view."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
