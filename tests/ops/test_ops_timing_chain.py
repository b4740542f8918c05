"""The shutdown timing chain, across the three places that own a piece of it:

    GATEWAY_DRAIN_TIMEOUT (25 s: a worker drains its WebSockets)
  < gunicorn graceful_timeout (ops/gunicorn.conf.py: drain + 5 = 30 s, then the master kills)
  < terminationGracePeriodSeconds (45 s) - preStop sleep (5 s)   (Kubernetes, then SIGKILL)
  and for compose: graceful_timeout < stop_grace_period (45 s)

If any link is out of order, a deploy cuts connections without the `reconnect` message and close
1012 the drain promises."""

from __future__ import annotations

import os
import re
import runpy
from typing import Any

import pytest

from tests.ops.support import OPS, ROOT, container, deployment, load_yaml, objects

GUNICORN_CONF = OPS / "gunicorn.conf.py"
MARGIN = 5  # seconds left between gunicorn's last kill and the orchestrator's SIGKILL

# The numbers the team fixed.
DRAIN_TIMEOUT = 25
GRACEFUL_TIMEOUT = 30
PRESTOP_SLEEP = 5
TERMINATION_GRACE = 45


def graceful_timeout(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> float:
    """graceful_timeout as gunicorn would read ops/gunicorn.conf.py under ``env``."""
    assert GUNICORN_CONF.exists(), (
        "ops/gunicorn.conf.py is missing: it owns graceful_timeout (drain timeout + 5)"
    )
    for key in list(os.environ):
        if key.startswith("GATEWAY_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    namespace: dict[str, Any] = runpy.run_path(str(GUNICORN_CONF), run_name="__config__")
    if "graceful_timeout" in namespace:
        return float(namespace["graceful_timeout"])
    from gunicorn.config import GracefulTimeout

    return float(GracefulTimeout.default)


def default_drain_timeout() -> float:
    from gateway.settings import Settings

    return float(Settings.model_fields["drain_timeout"].default)


def prestop_seconds() -> int:
    pre_stop = container()["lifecycle"]["preStop"]
    if "sleep" in pre_stop:  # Kubernetes >= 1.30 native sleep action
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


def duration_seconds(text: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", text)
    assert match, f"unsupported duration {text!r}"
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def test_defaults_are_the_agreed_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_drain_timeout() == DRAIN_TIMEOUT
    assert graceful_timeout({}, monkeypatch) == GRACEFUL_TIMEOUT
    assert prestop_seconds() == PRESTOP_SLEEP
    assert deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == (
        TERMINATION_GRACE
    )


def test_graceful_timeout_follows_the_drain_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator raising GATEWAY_DRAIN_TIMEOUT gets a matching gunicorn graceful_timeout."""
    assert graceful_timeout({"GATEWAY_DRAIN_TIMEOUT": "60"}, monkeypatch) > 60


def test_kubernetes_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    env = objects()["ConfigMap"]["data"]
    drain = float(env.get("GATEWAY_DRAIN_TIMEOUT", default_drain_timeout()))
    graceful = graceful_timeout(env, monkeypatch)
    grace = deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = prestop_seconds()
    assert drain < graceful, f"drain {drain}s must end before gunicorn's graceful {graceful}s"
    assert pre_stop + graceful + MARGIN <= grace, (
        f"preStop {pre_stop}s + graceful {graceful}s + margin {MARGIN}s > "
        f"terminationGracePeriodSeconds {grace}s: the kubelet would SIGKILL mid-drain"
    )
    # Readiness must notice a drain before the preStop ends (it is also removed from the
    # endpoints at termination; this covers a drain triggered by other means).
    readiness = container()["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= graceful


def test_compose_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    services = load_yaml(ROOT / "compose.yaml")["services"]
    gateways = [s for s in services.values() if s.get("build")]
    assert gateways
    for service in gateways:
        env = {k: str(v) for k, v in service["environment"].items()}
        drain = float(env.get("GATEWAY_DRAIN_TIMEOUT", default_drain_timeout()))
        graceful = graceful_timeout(env, monkeypatch)
        stop_grace = duration_seconds(service["stop_grace_period"])
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert drain < graceful
        assert graceful + MARGIN <= stop_grace, (
            f"compose stop_grace_period {stop_grace}s does not cover graceful {graceful}s"
        )
