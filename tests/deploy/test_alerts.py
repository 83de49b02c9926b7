"""Alert rules, checked and unit-tested by the distribution's ``promtool``.

``deploy/prometheus/tests/alerts_test.yml`` feeds each alert series that break its objective
and neighbours that keep it; here promtool runs those tests, and runs them again against
rules whose thresholds were loosened, which must fail: the unit tests pin the thresholds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.support import DEPLOY
from tests.support.deploy import Promtool

RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "alerts_test.yml"
EXPECTED_ALERTS = {
    "WatchtimeLatencyP99High",
    "WatchtimeErrorRatioHigh",
    "WatchtimeQueueSaturated",
    "WatchtimeRejectionSpike",
    "WatchtimeTargetDown",
    "WatchtimeModelNotLoaded",
    "WatchtimeModelLoadFailed",
    "WatchtimePredictionDrift",
    "WatchtimeQuickSkipDrift",
}


def test_rules_pass_promtool_check(promtool: Promtool) -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_every_alert_is_unit_tested_firing() -> None:
    rules = yaml.safe_load(RULES.read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert names == EXPECTED_ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == EXPECTED_ALERTS


def test_promtool_rule_unit_tests_pass(promtool: Promtool) -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("threshold", "loosened"),
    [
        ("> 0.050", "> 0.100"),  # p99 objective
        ("> 0.01\n", "> 0.03\n"),  # 5xx ratio
        ("> 0.8 * 20000", "> 0.9 * 20000"),  # queue saturation
        ("> 0.05\n        for: 5m", "> 0.20\n        for: 5m"),  # rejection ratio
        ("> 0.20\n", "> 0.60\n"),  # predicted watch time drift
        (") > 0.05\n        for: 30m", ") > 0.15\n        for: 30m"),  # quick-skip drift
        ("unless on (job, instance) watchtime_model_info == 1", "unless on (job, instance) up"),
        ("(watchtime_model_refused) > 0", "(watchtime_model_refused) > 1"),
    ],
)
def test_unit_tests_catch_a_loosened_threshold(
    promtool: Promtool, tmp_path: Path, threshold: str, loosened: str
) -> None:
    text = RULES.read_text()
    assert text.count(threshold) == 1, threshold
    (tmp_path / "tests").mkdir()
    (tmp_path / "alerts.yml").write_text(text.replace(threshold, loosened))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / "alerts_test.yml")
    result = promtool("test", "rules", str(tmp_path / "tests" / "alerts_test.yml"))
    assert result.returncode != 0, result.stdout
