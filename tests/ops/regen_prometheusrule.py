"""Write ops/k8s/prometheusrule.yaml from ops/prometheus/alerts.yml (the single source).

Run after editing the alerts:  .venv/bin/python tests/ops/regen_prometheusrule.py
tests/ops/test_kubernetes.py fails while the two differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = ROOT / "ops" / "k8s" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from ops/prometheus/alerts.yml by tests/ops/regen_prometheusrule.py: edit the
# alerts there, then regenerate. Prometheus Operator picks these rules up (the rule selector of
# your Prometheus resource may require a label such as `release: <name>`: add it in an overlay).
"""


def prometheus_rule() -> dict[str, Any]:
    alerts = yaml.safe_load(ALERTS.read_text())
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "gateway", "labels": {"app.kubernetes.io/name": "gateway"}},
        "spec": {"groups": alerts["groups"]},
    }


def render() -> str:
    return HEADER + str(yaml.safe_dump(prometheus_rule(), sort_keys=False, width=100))


if __name__ == "__main__":
    PROMETHEUS_RULE.write_text(render())
    print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")
