"""The command line and the plain HTTP routes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support.servers import GATEWAY_BIN, GatewayProcess, start_gateway


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayProcess]:
    with start_gateway() as gateway:
        yield gateway


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GATEWAY_BIN), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [("GATEWAY_RATE_LIMIT", "lots"), ("GATEWAY_PORT", "-1"), ("GATEWAY_BROKER_URL", "nats://x")],
)
def test_bad_setting_stops_the_start_naming_the_variable(variable: str, value: str) -> None:
    result = run_cli("serve", env={variable: value})
    assert result.returncode == 2
    assert variable in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_several_workers_need_a_shared_broker() -> None:
    result = run_cli("serve", "--workers", "2", env={})
    assert result.returncode == 2
    assert "GATEWAY_BROKER_URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_health_readiness_and_page(server: GatewayProcess) -> None:
    assert server.get("/healthz").status_code == 200
    assert server.get("/readyz").json() == {"status": "ready"}
    page = server.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]


def test_publish_api_is_off_without_a_key(server: GatewayProcess) -> None:
    import httpx

    response = httpx.post(server.base_url + "/api/rooms/lobby/messages", json={"text": "hi"})
    assert response.status_code == 404


def test_metrics_exposition_has_the_spec_series(server: GatewayProcess) -> None:
    text = server.get("/metrics").text
    for name in (
        "gateway_connections ",
        "gateway_connections_opened_total",
        'gateway_connections_closed_total{reason="heartbeat_timeout"}',
        "gateway_messages_received_total",
        "gateway_messages_delivered_total",
        'gateway_messages_rejected_total{reason="forbidden"}',
        "gateway_broadcast_duration_seconds_bucket",
        "gateway_broadcast_recipients_bucket",
        "gateway_delivery_latency_seconds_bucket",
        "gateway_draining",
    ):
        assert name in text, name
