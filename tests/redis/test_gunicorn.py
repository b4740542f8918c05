"""The gunicorn side: the config both entry points read, the worker class, and the refusal to
run several workers on the in-process broker. No Redis needed here."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import GATEWAY_BIN, scaled

ROOT = Path(__file__).resolve().parents[2]
OPS_CONF = ROOT / "ops" / "gunicorn.conf.py"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    env.update(extra)
    return env


def read_config(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """ops/gunicorn.conf.py as gunicorn reads it, under ``env``."""
    for key in list(os.environ):
        if key.startswith("GATEWAY_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return runpy.run_path(str(OPS_CONF), run_name="__config__")


def test_config_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = read_config(
        monkeypatch,
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT="9123",
        GATEWAY_WORKERS="3",
        GATEWAY_BROKER_URL="redis://127.0.0.1:6379/0",
        GATEWAY_DRAIN_TIMEOUT="12.5",
    )
    assert config["bind"] == ["127.0.0.1:9123"]
    assert config["workers"] == 3
    assert config["worker_class"] == "gateway.server.worker.GatewayWorker"
    assert config["graceful_timeout"] == 18  # the drain, rounded up, plus 5 s
    assert config["preload_app"] is False
    assert config["max_requests"] == 0
    ipv6 = read_config(monkeypatch, GATEWAY_HOST="::1", GATEWAY_PORT="9124")
    assert ipv6["bind"] == ["[::1]:9124"]


def test_default_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.server import gunicorn_conf

    assert read_config(monkeypatch)["workers"] == 1, "the embedded broker: one process"
    shared = read_config(monkeypatch, GATEWAY_BROKER_URL="redis://127.0.0.1:6379/0")
    assert shared["workers"] == gunicorn_conf.usable_cpus()
    assert 1 <= gunicorn_conf.usable_cpus() <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(gunicorn_conf, "_cgroup_quota", lambda: 0.5)
    assert gunicorn_conf.usable_cpus() == 1, "half a CPU of quota: one worker"


def test_several_workers_need_a_shared_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as refused:
        read_config(monkeypatch, GATEWAY_WORKERS="2")
    assert "GATEWAY_BROKER_URL" in str(refused.value.code)


def test_worker_runs_the_gateway_uvicorn_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from gateway.server.handshake import GatewayHttpProtocol
    from gateway.server.worker import GatewayWorker
    from gateway.server.wsprotocol import GatewayWebSocketProtocol

    monkeypatch.setenv("GATEWAY_HEARTBEAT_INTERVAL", "7")
    monkeypatch.setenv("GATEWAY_HEARTBEAT_TIMEOUT", "9")
    monkeypatch.setenv("GATEWAY_MAX_FRAME_BYTES", "2048")
    monkeypatch.setenv("GATEWAY_DRAIN_TIMEOUT", "10")
    monkeypatch.setenv("GATEWAY_HANDSHAKE_TIMEOUT", "3")
    cfg = Config()
    cfg.set("graceful_timeout", 15)
    worker = GatewayWorker(1, os.getpid(), [], None, 15, cfg, Logger(cfg))
    try:
        config = worker.config
        assert issubclass(config.ws, GatewayWebSocketProtocol)
        assert (config.ws_ping_interval, config.ws_ping_timeout) == (7.0, 9.0)
        assert config.ws_max_size == 2048
        assert config.ws_per_message_deflate is False
        assert (config.loop, config.lifespan) == ("uvloop", "on")
        assert issubclass(config.http, GatewayHttpProtocol)  # httptools, with a deadline
        assert config.http.handshake_timeout == 3.0
        assert 0 < config.timeout_graceful_shutdown <= 15 - 10
    finally:
        worker.tmp.close()


def test_master_imports_nothing_that_must_not_cross_a_fork() -> None:
    """The master loads the config and the worker class; neither may import prometheus_client
    (multiprocess mode is chosen at its first import) nor build the app."""
    probe = (
        "import sys, runpy; runpy.run_path(sys.argv[1]); import gateway.server.worker; "
        "bad = [m for m in ('prometheus_client', 'gateway.app', 'gateway.hub', 'redis') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(OPS_CONF)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=scaled(30),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("entry", ["gateway serve --workers 2", "gunicorn -c ops/gunicorn.conf.py"])
def test_refuses_to_start_several_workers_without_a_broker(entry: str) -> None:
    if entry.startswith("gateway"):
        command = [str(GATEWAY_BIN), "serve", "--workers", "2"]
        env = clean_env()
    else:
        command = [str(GATEWAY_BIN.with_name("gunicorn")), "-c", str(OPS_CONF), "gateway.app:app"]
        env = clean_env(GATEWAY_WORKERS="2", GATEWAY_HOST="127.0.0.1", GATEWAY_PORT="1")
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=scaled(30), cwd=ROOT
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "GATEWAY_BROKER_URL" in line]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
