"""Alert rules: `promtool check` and `promtool test rules`, plus checks that need no promtool.

promtool comes from Debian's `prometheus` package (`make tools` installs it). Without it the promtool
tests skip with the reason, except on CI (CI=true), where a missing promtool is a failure: the rules
would otherwise land untested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_metrics_catalogue import catalogue, metric_names_in

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROM / "rules.yml"
RULES_TEST = PROM / "rules_test.yml"
SEVERITIES = {"page", "ticket"}


def promtool() -> str:
    """The promtool path; fails on CI and skips elsewhere when it is not installed."""
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("promtool is missing on CI: `make tools` installs it (Debian package prometheus)")
    pytest.skip("promtool not installed: `make tools` or `apt-get install prometheus`")


def run(*args: str, cwd: Path = PROM) -> None:
    done = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_rules_are_valid() -> None:
    run("check", "rules", str(RULES))


def test_rule_unit_tests_pass() -> None:
    run("test", "rules", str(RULES_TEST))


def test_scrape_config_is_valid(tmp_path: Path) -> None:
    # The compose file mounts the rules at /etc/prometheus; point the copy at the file here instead.
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["rule_files"] = [str(RULES)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    run("check", "config", str(tmp_path / "prometheus.yml"), cwd=tmp_path)


def test_rules_use_only_catalogued_metrics() -> None:
    known = set(catalogue())
    for rule in rules():
        unknown = metric_names_in(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: not in docs/metrics.md: {unknown}"


def test_every_alert_is_actionable_and_tested_firing() -> None:
    tested = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing = {case["alertname"] for test in tested for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    alerts = [rule for rule in rules() if "alert" in rule]
    assert {"WherebyConsumerLagGrowing", "WherebyE2ELatencySLOBurnFast"} <= {a["alert"] for a in alerts}
    for alert in alerts:
        assert alert["labels"]["severity"] in SEVERITIES, alert["alert"]
        assert alert["annotations"].get("summary") and alert["annotations"].get("description"), alert["alert"]
        assert alert["alert"] in firing, f"{alert['alert']}: add a case to rules_test.yml where it fires"
