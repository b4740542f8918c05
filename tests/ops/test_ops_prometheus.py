"""Prometheus artefacts: the scrape config and alert rules pass promtool, every alert has unit
tests that make it fire and stay silent, and every alert links to a runbook section."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.support import OPS, load_yaml, require_tool, run

PROM_DIR = OPS / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERT_TESTS = PROM_DIR / "alerts.test.yml"
RUNBOOK = PROM_DIR / "RUNBOOK.md"
CONFIG = PROM_DIR / "prometheus.yml"

# The list: gateway down, connection cliff, abnormal-close rate, rejection spike,
# p99 latency SLO, FD saturation, broker unreachable.
REQUIRED_ALERTS = {
    "GatewayDown",
    "GatewayConnectionCliff",
    "GatewayAbnormalCloseRate",
    "GatewayRejectionSpike",
    "GatewayDeliveryLatencySLO",
    "GatewayFDSaturation",
    "GatewayBrokerUnreachable",
}


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule
    ]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in alert_rules()]


def test_promtool_check_config() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "config", str(CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool")
    # docs/observability.md's command, from the repository root.
    result = run([promtool, "test", "rules", "ops/prometheus/alerts.test.yml"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_required_alerts_exist() -> None:
    names = alert_names()
    assert set(names) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(names)
    assert len(names) == len(set(names)), "duplicate alert names"


def test_config_scrapes_gateway_and_loads_the_rules() -> None:
    config = load_yaml(CONFIG)
    assert [str(PROM_DIR / f) for f in config["rule_files"]] == [str(ALERTS)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # The alerts and the dashboard select job="gateway".
    assert "gateway" in jobs
    targets = [t for sc in jobs["gateway"]["static_configs"] for t in sc["targets"]]
    assert targets == ["gateway-1:8000", "gateway-2:8000"]  # the compose services


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = set(alert_names())
    assert names - firing == set(), "alerts without a firing test"
    assert names - silent == set(), "alerts without a test where they stay silent"


@pytest.mark.parametrize("name", alert_names())
def test_unit_tests_fail_when_the_alert_never_fires(name: str, tmp_path: Path) -> None:
    """Mutation check: with this alert's expression replaced by one that never matches,
    `promtool test rules` must fail, so the unit tests really exercise the alert."""
    promtool = require_tool("promtool")
    text = ALERTS.read_text()
    data = load_yaml(ALERTS)
    for group in data["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                rule["expr"] = "vector(1) == 0"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yml")
    result = run([promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path)
    assert result.returncode != 0, f"{name}: unit tests still pass with a dead expression"
    assert name in result.stdout + result.stderr
    assert ALERTS.read_text() == text


def runbook_anchors() -> set[str]:
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("## "):
            # GitHub's anchor: lower-case, spaces to dashes, punctuation dropped.
            title = line[3:].strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_annotations_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    runbook = annotations["runbook"]
    path, _, anchor = runbook.partition("#")
    assert path == "ops/prometheus/RUNBOOK.md"
    assert anchor == rule["alert"].lower()
    assert anchor in runbook_anchors(), f"RUNBOOK.md has no section '## {rule['alert']}'"
    assert "for" in rule, "alerts need a 'for' so a single bad scrape does not page"
