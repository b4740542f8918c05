"""What metrics and tracing cost on the message path: a micro-benchmark of the hub, no sockets.

    python -m loadtest.trace_cost                   # every variant, a table on stdout
    python -m loadtest.trace_cost --recipients 100 --messages 20000 --markdown

One message = ``Hub.publish_message`` over the memory broker (envelope, publish span, broker,
``deliver``: broadcast span, fan-out to N sessions whose sockets discard the bytes, the four
metric updates). Each variant runs in its own interpreter because prometheus_client chooses
in-memory or file-backed (multiprocess) values once, at import:

* metrics ``none`` (metric objects replaced by no-ops: the floor), ``memory`` (``gateway
  serve``), ``multiprocess`` (gunicorn workers: mmap files in PROMETHEUS_MULTIPROC_DIR);
* tracing ``off`` (no exporter configured: what every deployment without OTEL_* runs),
  ``sampled`` (SDK + BatchSpanProcessor into an exporter that drops the batch: span work on the
  message path, export cost left on the exporter thread), ``unsampled`` (SDK, sampler
  ``traceidratio`` 0: context still injected, spans not recorded).

Also reported: the cost of one /metrics exposition in multiprocess mode with the files of
``--workers`` workers. Figures are microseconds of CPU on this machine per message; compare
rows, not machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

METRICS = ("none", "memory", "multiprocess")
TRACING = ("off", "unsampled", "sampled")


class _DiscardSink:
    def write_now(self, data: bytes) -> bool:
        return True

    async def send_text(self, payload: str) -> None:
        pass

    async def close(self, code: int, reason: str) -> None:
        pass

    def abort(self) -> bool:
        return False


class _NoMetric:
    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def labels(self, *args: Any, **kwargs: Any) -> _NoMetric:
        return self


def _silence_metrics() -> None:
    from gateway import metrics

    for name in dir(metrics):
        if name.isupper() and hasattr(getattr(metrics, name), "_name"):
            setattr(metrics, name, _NoMetric())


def _tracing(mode: str) -> Any:
    if mode == "off":
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased

    from gateway import tracing

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    sampler = ALWAYS_ON if mode == "sampled" else TraceIdRatioBased(0.0)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1_000_000))
    tracing.use_provider(provider)
    return provider


async def _publish_loop(recipients: int, messages: int, rounds: int) -> list[float]:
    from gateway.node import Node
    from gateway.outbox import Outbox
    from gateway.protocol import WireFormat
    from gateway.settings import RateLimit, load_settings

    node = Node(load_settings(rate_limit=RateLimit(0, 0), idle_timeout=0, send_queue=10))
    hub = node.hub
    await node.start()
    for n in range(recipients):
        outbox = Outbox(_DiscardSink(), WireFormat.JSON, 10)
        session = node.new_session(f"user-{n}", WireFormat.JSON, outbox)
        await hub.attach(session, allow_duplicate=False)
    per_message = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(messages):
            await hub.publish_message("lobby", "user-0", "hello")
        per_message.append((time.process_time() - started) / messages * 1e6)
    await node.aclose()
    return per_message


def _off_path_cost(loops: int = 200_000) -> float:
    """The whole of what tracing adds per message when it is off: the publish wrapper's check
    and the broadcast span's shared null context (µs; minus an empty loop)."""
    from gateway import tracing
    from gateway.broker import Envelope
    from gateway.broker.memory import MemoryBroker

    broker = MemoryBroker(lambda envelope: None, 0)
    envelope = Envelope("room:lobby", {}, 0.0)

    async def traced() -> None:
        for _ in range(loops):
            await tracing.publish(broker, envelope, keep=False)
            with tracing.broadcast_span(broker, envelope, 10):
                pass

    async def bare() -> None:
        for _ in range(loops):
            await broker.publish(envelope, keep=False)

    timings = {}
    for name, body in (("traced", traced), ("bare", bare)):
        started = time.process_time()
        asyncio.run(body())
        timings[name] = (time.process_time() - started) / loops * 1e6
    return timings["traced"] - timings["bare"]


def _exposition_cost(workers: int) -> float:
    """Write ``workers`` workers' worth of files (as a loaded fleet would), time one scrape."""
    from prometheus_client import values

    from gateway import metrics

    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for pid in range(1, workers + 1):
        values.ValueClass = values.MultiProcessValue(lambda pid=pid: pid)  # type: ignore[no-untyped-call]
        fake = _fresh_metrics()
        for reason in metrics.REJECT_REASONS:
            fake["rejected"].labels(reason).inc()
        fake["latency"].observe(0.001)
    rounds = []
    for _ in range(20):
        started = time.perf_counter()
        metrics.exposition()
        rounds.append((time.perf_counter() - started) * 1e3)
    assert os.listdir(directory)
    return statistics.median(rounds)


def _fresh_metrics() -> dict[str, Any]:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from gateway import metrics

    registry = CollectorRegistry()
    gauge = Gauge("gateway_connections", "", registry=registry, multiprocess_mode="livesum")
    gauge.inc()
    rejected = Counter("gateway_messages_rejected", "", ["reason"], registry=registry)
    latency = Histogram(
        "gateway_delivery_latency_seconds",
        "",
        registry=registry,
        buckets=metrics.DELIVERY_LATENCY._upper_bounds[:-1],
    )
    return {"rejected": rejected, "latency": latency}


def _child(args: argparse.Namespace) -> None:
    if args.metrics == "none":
        _silence_metrics()
    provider = _tracing(args.tracing)
    rounds = asyncio.run(_publish_loop(args.recipients, args.messages, args.rounds))
    result: dict[str, Any] = {"us_per_message": statistics.median(rounds)}
    if provider is not None:
        provider.shutdown()
    if args.metrics == "multiprocess" and args.tracing == "off":
        result["scrape_ms"] = _exposition_cost(args.workers)
    if args.metrics == "none":
        result["off_path_us"] = _off_path_cost()
    print(json.dumps(result))


def _run_variant(metrics: str, tracing: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tempfile.TemporaryDirectory(prefix="trace-cost-") as directory:
        if metrics == "multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        command = [
            sys.executable,
            "-m",
            "loadtest.trace_cost",
            "--child",
            f"--metrics={metrics}",
            f"--tracing={tracing}",
            f"--recipients={args.recipients}",
            f"--messages={args.messages}",
            f"--rounds={args.rounds}",
            f"--workers={args.workers}",
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=10)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="workers' files for the scrape")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--metrics", choices=METRICS, default="memory")
    parser.add_argument("--tracing", choices=TRACING, default="off")
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    rows = []
    for metrics in METRICS:
        for tracing in TRACING:
            if metrics == "none" and tracing != "off":
                continue
            rows.append((metrics, tracing, _run_variant(metrics, tracing, args)))
    floor = rows[0][2]["us_per_message"]
    head = f"per message, {args.recipients} local recipients, median of {args.rounds} rounds"
    print(f"{head} x {args.messages} messages (CPU µs):")
    if args.markdown:
        print("\n| metrics | tracing | µs/message | over no metrics, no tracing |")
        print("|---|---|---:|---:|")
    for metrics, tracing, result in rows:
        cost = result["us_per_message"]
        if args.markdown:
            print(f"| {metrics} | {tracing} | {cost:.1f} | +{cost - floor:.1f} |")
        else:
            print(
                f"  metrics={metrics:<13} tracing={tracing:<10} {cost:7.1f}  (+{cost - floor:.1f})"
            )
    scrape = next(r["scrape_ms"] for m, t, r in rows if m == "multiprocess" and t == "off")
    off_path = rows[0][2]["off_path_us"]
    print(f"\ntracing off, its whole per-message code path: {off_path * 1000:.0f} ns")
    print(f"/metrics exposition, multiprocess, {args.workers} workers' files: {scrape:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
