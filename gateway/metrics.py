"""The Prometheus series of SPEC.md. Their names are a contract with ops/ dashboards and alerts.

Under gunicorn every worker writes its values to ``PROMETHEUS_MULTIPROC_DIR`` (prepared by the
master, see :mod:`gateway.multiproc`), and a scrape of any worker merges the files of the whole
host. Gauges therefore say how they merge: ``live*`` modes drop a worker's value as soon as the
master reaps it, so a killed worker's connections leave ``gateway_connections`` at once.
One process (``gateway serve``) keeps the ordinary in-memory registry.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.disconnect import CLOSE_REASONS
from gateway.multiproc import MASTER_PID_ENV, MULTIPROC_ENV

log = logging.getLogger("gateway.metrics")

# Multiprocess mode has no *_created series: keep both modes' expositions alike.
disable_created_metrics()  # type: ignore[no-untyped-call]

REJECT_REASONS = ("rate_limited", "too_large", "invalid", "forbidden")
REFUSE_REASONS = (
    "rate_limited",
    "origin",
    "unauthorized",
    "forbidden",
    "handshake_timeout",
    "over_capacity",
    "unavailable",
)
HOOK_EVENTS = ("connect", "join", "message")
HOOK_OUTCOMES = ("allow", "deny", "error")
API_OPERATIONS = ("publish", "rooms", "messages", "disconnect", "remove_member")
API_OUTCOMES = ("ok", "replayed", "invalid", "not_found", "conflict", "unavailable")
HTTP_REFUSE_REASONS = ("unauthorized", "api_off", "too_large")

CONNECTIONS = Gauge(
    "gateway_connections", "Open WebSocket connections.", multiprocess_mode="livesum"
)
CONNECTIONS_OPENED = Counter("gateway_connections_opened", "WebSocket connections accepted.")
CONNECTIONS_CLOSED = Counter(
    "gateway_connections_closed", "WebSocket connections ended, by reason.", ["reason"]
)
CONNECTIONS_REFUSED = Counter(
    "gateway_connections_refused",
    "WebSocket handshakes answered with an HTTP error instead of the upgrade, by reason.",
    ["reason"],
)
HTTP_REFUSED = Counter(
    "gateway_http_requests_refused",
    "HTTP requests answered before their body was read (401, 404, 413), by reason.",
    ["reason"],
)
MESSAGES_RECEIVED = Counter("gateway_messages_received", "Chat messages accepted from clients.")
MESSAGES_DELIVERED = Counter(
    "gateway_messages_delivered", "Messages written to client connections."
)
MESSAGES_REJECTED = Counter(
    "gateway_messages_rejected", "Client messages refused, by reason.", ["reason"]
)
BROADCAST_DURATION = Histogram(
    "gateway_broadcast_duration_seconds",
    "Duration of one broadcast's local fan-out.",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
BROADCAST_RECIPIENTS = Histogram(
    "gateway_broadcast_recipients",
    "Local recipients of one broadcast.",
    buckets=(0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
DELIVERY_LATENCY = Histogram(
    "gateway_delivery_latency_seconds",
    "From acceptance by any worker to the write on this worker.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DRAINING = Gauge(
    "gateway_draining", "1 while a worker of this host drains.", multiprocess_mode="livemax"
)
BROKER_UP = Gauge(
    "gateway_broker_up",
    "1 while the broker is reachable (the lowest over live workers).",
    multiprocess_mode="livemin",
)
HOOK_REQUESTS = Counter(
    "gateway_hook_requests",
    "Decisions asked of the app backend, by event and outcome (allow, deny, error).",
    ["event", "outcome"],
)
HOOK_DURATION = Histogram(
    "gateway_hook_duration_seconds",
    "From sending a hook request to its answer (or its failure), by event.",
    ["event"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
API_REQUESTS = Counter(
    "gateway_api_requests",
    "Server API calls (bearer GATEWAY_API_KEY), by operation and outcome.",
    ["operation", "outcome"],
)

for _reason in CLOSE_REASONS:
    CONNECTIONS_CLOSED.labels(_reason)
for _reason in REJECT_REASONS:
    MESSAGES_REJECTED.labels(_reason)
for _reason in REFUSE_REASONS:
    CONNECTIONS_REFUSED.labels(_reason)
for _reason in HTTP_REFUSE_REASONS:
    HTTP_REFUSED.labels(_reason)
for _event in HOOK_EVENTS:
    HOOK_DURATION.labels(_event)
    for _outcome in HOOK_OUTCOMES:
        HOOK_REQUESTS.labels(_event, _outcome)
for _operation in API_OPERATIONS:
    for _outcome in API_OUTCOMES:
        API_REQUESTS.labels(_operation, _outcome)

_LIVE_FILE = re.compile(r"^gauge_livesum_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def live_pids(directory: str) -> list[int]:
    """Workers whose ``livesum`` file exists: every worker creates one at import (the
    connections gauge), and ``mark_process_dead`` removes it when the master reaps the worker."""
    pids = []
    for entry in os.scandir(directory):
        match = _LIVE_FILE.match(entry.name)
        if match:
            pids.append(int(match.group(1)))
    return sorted(pids)


class InfoCollector(Collector):
    """``gateway_info{version}``: a constant, so computed at scrape (``Info`` has no
    multiprocess support)."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("gateway_info", "Gateway build information.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info


class FleetProcessCollector(Collector):
    """The standard ``process_*`` series for each live worker and the master, labelled ``pid``.

    prometheus_client's process collector describes only the scraping process, which under
    gunicorn is a random worker; reading ``/proc/<pid>`` for every live pid keeps the series
    names ops dashboards use (they ``sum by (instance)``) while covering the whole host.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def pids(self) -> list[int]:
        pids = live_pids(self.directory)
        master = os.environ.get(MASTER_PID_ENV, "")
        if master.isdigit() and int(master) not in pids:
            pids.append(int(master))
        return pids

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.pids():
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for family in collector.collect():
                target = merged.get(family.name)
                if target is None:
                    target = _labelled_like(family)
                    merged[family.name] = target
                for sample in family.samples:
                    target.add_metric([str(pid)], sample.value)  # type: ignore[attr-defined]
        yield from merged.values()


def _labelled_like(family: Metric) -> Metric:
    if family.type == "counter":
        return CounterMetricFamily(family.name, family.documentation, labels=["pid"])
    return GaugeMetricFamily(family.name, family.documentation, labels=["pid"])


REGISTRY.register(InfoCollector())


def scrape_registry() -> CollectorRegistry:
    """The registry one scrape reads: the host's merged files under gunicorn, else this process.

    A fresh registry per scrape is what prometheus_client prescribes for multiprocess mode
    (the collector must not also see this worker's live in-memory metrics).
    """
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(FleetProcessCollector(directory))
    registry.register(InfoCollector())
    return registry


def exposition() -> tuple[bytes, str]:
    """The body and content type of ``GET /metrics``."""
    return generate_latest(scrape_registry()), CONTENT_TYPE_LATEST


def multiprocess_active() -> bool:
    """True when this process writes its values to the shared directory."""
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


def check_multiprocess() -> None:
    """Say loudly if this worker's values would be missing from the host's totals.

    prometheus_client picks its value class when first imported, so a process that imported it
    before ``PROMETHEUS_MULTIPROC_DIR`` was set keeps private values nobody scrapes.
    """
    if multiprocess_dir() is not None and not multiprocess_active():
        log.error(
            "%s is set but prometheus_client was imported before it: this worker's metrics "
            "are missing from /metrics",
            MULTIPROC_ENV,
        )
