"""gunicorn settings for the gateway, from the same ``GATEWAY_*`` environment as the rest.

``gateway serve --workers N`` runs ``gunicorn -c python:gateway.server.gunicorn_conf``; the
image runs ``gunicorn -c ops/gunicorn.conf.py gateway.app:app``, a thin file importing this
module. Every public name here is a gunicorn setting or server hook (gunicorn ignores other
names): add hooks as plain functions, e.g. ``def child_exit(server, worker): ...``.

The master only reads settings and forks: the app, its Redis connections, event loops and
exporters are made in each worker after the fork (``preload_app`` stays off), and nothing here
imports prometheus_client (multiprocess mode must be set up before it is first imported).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from gateway import logs
from gateway.settings import Settings, SettingsError, load_settings


def _load() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        sys.exit(f"gateway: invalid setting: {error}")


def worker_count(settings: Settings) -> int:
    """``GATEWAY_WORKERS``, else one per usable CPU with a shared broker, else one."""
    if settings.workers:
        return settings.workers
    if not settings.uses_shared_broker:
        return 1
    return usable_cpus()


def usable_cpus() -> int:
    """CPUs this process may run on, capped by a container's CPU quota (cgroup v2 or v1): a
    pod limited to 2 CPUs on a 64-core node wants 2 workers, not 64."""
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(min(cpus, math.ceil(quota)) if quota else cpus, 1)


def _cgroup_quota() -> float | None:
    sources = (
        ("/sys/fs/cgroup/cpu.max", None),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    )
    for quota_file, period_file in sources:
        try:
            fields = Path(quota_file).read_text().split()
            if period_file is not None:
                fields.append(Path(period_file).read_text().strip())
        except OSError:
            continue
        if len(fields) >= 2 and fields[0] not in {"max", "-1"}:
            return int(fields[0]) / int(fields[1])
        return None
    return None


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


_settings = _load()

workers = worker_count(_settings)
if workers > 1 and not _settings.uses_shared_broker:
    sys.exit(
        f"gateway: {workers} workers need a shared broker: "
        "set GATEWAY_BROKER_URL=redis://host:port/db (or GATEWAY_WORKERS=1)"
    )

bind = [bind_address(_settings.host, _settings.port)]
worker_class = "gateway.server.worker.GatewayWorker"
graceful_timeout = math.ceil(_settings.drain_timeout) + 5
"""The master kills a worker this long after its TERM: the drain (GATEWAY_DRAIN_TIMEOUT) plus
5 s. The team's chain: drain 25 < graceful 30 < terminationGracePeriodSeconds 45 - preStop 5."""
timeout = 30
"""A worker whose event loop stops beating for this long is killed and replaced."""
keepalive = 5
preload_app = False
max_requests = 0
"""Never recycle workers by request count: each recycle is a drain of long-lived sockets."""
proc_name = "gateway"
control_socket_disable = True
"""gunicorn 25.1+ opens a control socket at one default path per user ($HOME/.gunicorn): two
gateways on a host would fight over it, and a read-only image cannot create it (a warning at
every start). The gateway is managed by signals (TERM drains, HUP rolls workers) instead."""
logconfig_dict = logs.logging_config(_settings.log_level, _settings.log_format)

# Server hooks (on_starting, child_exit, on_exit, ...) go below as plain functions.


def on_starting(server: object) -> None:
    """Master, before any fork: a fresh Prometheus multiprocess directory for this start (in
    the environment the workers inherit) and the OTEL_* variables checked once, not per worker.
    """
    from gateway import multiproc
    from gateway.tracing import TracingConfigError, config_from_env

    try:
        config_from_env()
    except TracingConfigError as error:
        sys.exit(f"gateway: invalid setting: {error}")
    multiproc.prepare()


def child_exit(server: object, worker: object) -> None:
    """Master, a worker reaped (clean exit, crash, kill -9): its connections leave the gauge."""
    from gateway import multiproc

    multiproc.worker_exited(worker.pid)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    from gateway import multiproc

    multiproc.cleanup()
