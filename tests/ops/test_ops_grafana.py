"""The Grafana dashboard: structure (datasource variable, $__rate_interval, units), coverage of
the metrics contract, and every panel query parsed and evaluated by a real Prometheus."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.ops.support import (
    OPS,
    dashboard,
    dashboard_panels,
    dashboard_queries,
    load_yaml,
    run_prometheus,
    substitute,
)

GRAFANA_UNITS = {"short", "none", "cps", "ops", "s", "ms", "bytes", "percentunit"}

# SPEC's metrics table plus the series the team adds (broker health, build info, process).
CONTRACT_METRICS = {
    "gateway_connections",
    "gateway_connections_opened_total",
    "gateway_connections_closed_total",
    "gateway_messages_received_total",
    "gateway_messages_delivered_total",
    "gateway_messages_rejected_total",
    "gateway_broadcast_duration_seconds_bucket",
    "gateway_broadcast_recipients_bucket",
    "gateway_delivery_latency_seconds_bucket",
    "gateway_draining",
    "gateway_broker_up",
    "gateway_info",
    "gateway_hook_requests_total",
    "gateway_hook_duration_seconds_bucket",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
}
METRIC_NAME = re.compile(r"\b((?:gateway|process)_[a-z_]+)\s*\{")


def test_datasource_variable_drives_every_panel() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard_panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    for name in ("job", "instance"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    assert variables["instance"]["includeAll"] is True
    assert variables["instance"]["allValue"] == ".*"


@pytest.mark.parametrize("panel", dashboard_panels(), ids=lambda p: p["title"])
def test_panel_has_unit_and_rate_interval(panel: dict[str, Any]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults.get("unit") in GRAFANA_UNITS, f"{panel['title']}: unit not set"
    assert panel.get("description"), "say what the panel shows"
    for target in panel["targets"]:
        expr = target["expr"]
        # Every range selector uses $__rate_interval (never a fixed window).
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", f"{panel['title']}: [{window}]"
        # Every selector is scoped to the chosen job and instances.
        for selector in re.findall(r"\{([^}]*)\}", expr):
            assert 'job="$job"' in selector, f"{panel['title']}: {expr}"
            assert 'instance=~"$instance"' in selector, f"{panel['title']}: {expr}"


def test_panel_ids_and_grid_are_sane() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_covers_the_metrics_contract() -> None:
    used = {m for _, expr in dashboard_queries() for m in METRIC_NAME.findall(expr)}
    assert CONTRACT_METRICS - used == set(), "metrics without a panel"
    assert used - CONTRACT_METRICS - {"up"} == set(), "panels on metrics outside the contract"


def test_required_panels() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard_panels())
    for needle in (
        "open connections",
        "connects per second",
        "disconnects by reason",
        "messages received / delivered",
        "rejections by reason",
        "broadcast latency p50 / p99",
        "delivery latency p50 / p99",
        "draining",
        "broker",
        "cpu",
        "memory",
        "file descriptors",
    ):
        assert needle in titles, needle


def test_histogram_panels_show_p50_and_p99() -> None:
    for panel in dashboard_panels():
        exprs = [t["expr"] for t in panel["targets"]]
        if any("histogram_quantile" in e for e in exprs):
            quantiles = sorted(re.findall(r"histogram_quantile\((0\.\d+)", " ".join(exprs)))
            assert quantiles == ["0.5", "0.99"], panel["title"]


def test_provisioning_loads_the_dashboard_directory() -> None:
    provider = load_yaml(OPS / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")
    assert provider["apiVersion"] == 1
    (only,) = provider["providers"]
    assert only["type"] == "file"
    sources = load_yaml(OPS / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    default = [s for s in sources["datasources"] if s.get("isDefault")]
    assert [s["type"] for s in default] == ["prometheus"]


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    """A real Prometheus (no targets) evaluates each query: a syntax or type error fails."""
    config = {"global": {"scrape_interval": "15s"}, "scrape_configs": []}
    with run_prometheus(config, tmp_path / "prom") as prom:
        for name, expr in dashboard_queries():
            try:
                prom.query(substitute(expr, job="gateway", rate_interval="1m"))
            except AssertionError as error:
                raise AssertionError(f"{name}: {error}") from None
        with pytest.raises(AssertionError, match="parse error"):
            prom.query("sum(rate(gateway_connections[1m])")  # the check can fail
    # The variables' own queries use Grafana's label_values(), not PromQL: check the metric.
    for variable in dashboard()["templating"]["list"][1:]:
        assert "gateway_connections" in variable["query"]["query"]
