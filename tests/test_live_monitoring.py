"""The alert rules, for real: `promtool check config` on the shipped Prometheus configuration,
`promtool check rules` and `promtool test rules` on deploy/monitoring/alerts.yml (each alert
fires on what it names, after its `for`, and stays quiet otherwise: alerts.test.yml).

Needs promtool (Debian: apt-get install prometheus); skipped with the reason elsewhere, failed
under INGESTD_TEST_LIVE=1 (CI installs it)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from .conftest import REPO

MONITORING = REPO / "deploy" / "monitoring"

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not installed (Debian: apt-get install prometheus; .ci/run installs it)"
        if os.environ.get("INGESTD_TEST_LIVE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def run(promtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120)


def test_the_shipped_configuration_and_rules_are_valid(promtool):
    for name in ("prometheus.yml", "prometheus-systemd.yml"):  # compose's, and a VM's beside the units
        config = run(promtool, "check", "config", name)
        assert config.returncode == 0, config.stdout + config.stderr
    rules = run(promtool, "check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 14 rules found" in rules.stdout


def test_each_alert_fires_on_its_situation_and_only_then(promtool):
    result = run(promtool, "test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails_the_rule_tests(promtool, tmp_path):
    """The rule tests can fail: an alert expected to fire where it cannot is reported."""
    shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
    text = (MONITORING / "alerts.test.yml").read_text()
    right = 'summary: "daily_activity: 1 dead letter(s) waiting, reason parse_error"'
    wrong = text.replace(right, right.replace("1 dead", "2 dead"))
    assert wrong != text
    (tmp_path / "alerts.test.yml").write_text(wrong)
    result = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "IngestdDeadLetter," in result.stdout + result.stderr


def test_every_alert_is_tested_and_tells_what_to_run_next():
    """Each rule has a case in alerts.test.yml where it fires, a summary, a description and a
    `command` annotation (the notifications show it); an alert labelled with a source names it."""
    rules = [rule for group in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
             for rule in group["rules"]]
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    fired = [(case["alertname"], alert["exp_labels"]) for test in tests
             for case in test.get("alert_rule_test", []) for alert in case["exp_alerts"]]
    for rule in rules:
        assert rule["alert"] in {name for name, _ in fired}, rule["alert"]
        assert {"summary", "description", "command"} <= set(rule["annotations"]), rule["alert"]
        if any(name == rule["alert"] and "source" in labels for name, labels in fired):
            assert "$labels.source" in rule["annotations"]["summary"], rule["alert"]
            assert "$labels.source" in rule["annotations"]["command"], rule["alert"]
