"""The Grafana dashboard and the alert rules read only what the service really exports.

Every dashboard query is parsed by the real PromQL parser (written into a rule file for
``promtool check rules``), and every metric and label it names must appear in the
``/metrics`` page of a real ``python -m service`` process after it has served requests:
a renamed metric or label in the service breaks this test, not a dashboard in production.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import DEPLOY
from tests.support.api import request_rows
from tests.support.deploy import Promtool, ServiceProcess, http_get
from tests.support.promql import (
    as_rule_file,
    dashboard_queries,
    label_names,
    metric_names,
    rule_queries,
)

pytestmark = pytest.mark.slow

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "watchtime.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# Series Prometheus itself adds to every scrape, not the service.
SCRAPE_SERIES = {"up"}


@pytest.fixture(scope="module")
def exported(service_process: ServiceProcess) -> Iterator[dict[str, set[str]]]:
    """Sample name -> label names on the /metrics page of a real server after traffic."""
    columns, _ = request_rows(64)
    body = json.dumps({"features": columns}).encode()
    request = urllib.request.Request(
        service_process.url + "/v1/predict",
        data=body,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    status, page = http_get(service_process.url + "/metrics")
    assert status == 200, page[:500]
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(page.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    yield samples


def _promtool_check(
    promtool: Promtool, tmp_path: Path, queries: list[tuple[str, str]]
) -> subprocess.CompletedProcess[str]:
    rule_file = tmp_path / "queries.yml"
    rule_file.write_text(as_rule_file(queries))
    return promtool("check", "rules", str(rule_file), timeout=60)


def test_every_dashboard_query_parses_as_promql(promtool: Promtool, tmp_path: Path) -> None:
    queries = dashboard_queries(DASHBOARD)
    assert len(queries) >= 20
    result = _promtool_check(promtool, tmp_path, queries)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_the_parser_check_rejects_a_broken_query(promtool: Promtool, tmp_path: Path) -> None:
    broken = [("p99", "histogram_quantile(0.99, sum by (le) (rate(watchtime_x_bucket[1m]))")]
    assert _promtool_check(promtool, tmp_path, broken).returncode != 0


def test_name_extraction_on_known_queries() -> None:
    expr = (
        'sum by (model, reason) (rate(watchtime_rejected_total{reason=~"a|b"}[5m] offset 1d))'
        " / on (model) group_left sum by (model) (rate(watchtime_requests_total[5m])) > 0.05"
    )
    assert metric_names(expr) == {"watchtime_rejected_total", "watchtime_requests_total"}
    assert label_names(expr) == {"model", "reason"}
    assert metric_names("sum(watchtime_inflight_requests) * 1e3") == {"watchtime_inflight_requests"}


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queries_name_only_exported_metrics_and_labels(
    exported: dict[str, set[str]], source: str
) -> None:
    queries = dashboard_queries(DASHBOARD) if source == "dashboard" else rule_queries(ALERTS)
    missing = []
    for title, expr in queries:
        names = metric_names(expr) - SCRAPE_SERIES
        assert names or source == "alerts", f"{title}: no metric in {expr}"
        for name in sorted(names - set(exported)):
            missing.append(f"{title}: metric {name}")
        available = set().union(*(exported.get(n, set()) for n in names)) | {"job", "instance"}
        for label in sorted(label_names(expr) - available):
            missing.append(f"{title}: label {label}")
    assert not missing, "\n".join(missing)


def test_dashboard_covers_every_metric_of_the_contract() -> None:
    used = set().union(*(metric_names(expr) for _, expr in dashboard_queries(DASHBOARD)))
    families = {
        "watchtime_requests_total", "watchtime_request_duration_seconds_bucket",
        "watchtime_queue_duration_seconds_bucket", "watchtime_inference_duration_seconds_bucket",
        "watchtime_postprocess_duration_seconds_bucket", "watchtime_batch_rows_bucket",
        "watchtime_request_rows_bucket", "watchtime_rows_total", "watchtime_batches_total",
        "watchtime_queue_rows", "watchtime_inflight_requests", "watchtime_rejected_total",
        "watchtime_model_info", "watchtime_predicted_watch_time_seconds_bucket",
        "watchtime_predicted_quick_skip_prob_bucket",
    }  # fmt: skip
    assert families <= used, families - used
