"""gunicorn 25.1+ opens a control socket under ``$HOME/.gunicorn`` by default: one path per user,
so two gateways on a host would share it, and a read-only home made every start log an error.
The gateway is managed by signals and turns it off."""

from __future__ import annotations

from tests.support.servers import start_gateway


def test_workers_start_without_a_control_socket_in_an_unwritable_home(redis_url: str) -> None:
    env = {"GATEWAY_BROKER_URL": redis_url, "HOME": "/proc", "XDG_RUNTIME_DIR": ""}
    with start_gateway(env, workers=2) as gateway:
        assert gateway.get("/readyz").status_code == 200
    log = gateway.log()  # after the stop: the whole life, shutdown included
    assert "Booting worker" in log or '"level"' in log
    assert "Control server" not in log
    assert "gunicorn.ctl" not in log
