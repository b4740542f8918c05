"""The metric contract of SPEC.md, as data the observability tests check expositions against."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.disconnect import CLOSE_REASONS

REJECT_REASONS = ("rate_limited", "too_large", "invalid", "forbidden")

# family name (as the parser reports it) -> (type, label name, label values every scrape shows)
SPEC_METRICS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "gateway_connections": ("gauge", None, ()),
    "gateway_connections_opened": ("counter", None, ()),
    "gateway_connections_closed": ("counter", "reason", CLOSE_REASONS),
    "gateway_messages_received": ("counter", None, ()),
    "gateway_messages_delivered": ("counter", None, ()),
    "gateway_messages_rejected": ("counter", "reason", REJECT_REASONS),
    "gateway_broadcast_duration_seconds": ("histogram", None, ()),
    "gateway_broadcast_recipients": ("histogram", None, ()),
    "gateway_delivery_latency_seconds": ("histogram", None, ()),
    "gateway_draining": ("gauge", None, ()),
}
PROCESS_METRICS = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
)


def contract_problems(text: str) -> list[str]:
    """Everything in an exposition that breaks the SPEC contract (empty = conforms)."""
    families = {family.name: family for family in text_string_to_metric_families(text)}
    problems = []
    for name, (kind, label, values) in SPEC_METRICS.items():
        family = families.get(name)
        if family is None:
            problems.append(f"{name}: missing")
            continue
        if family.type != kind:
            problems.append(f"{name}: type {family.type}, expected {kind}")
        problems.extend(_label_problems(name, kind, label, values, family.samples))
    info = families.get("gateway_info")
    if info is None or not any("version" in sample.labels for sample in info.samples):
        problems.append("gateway_info{version}: missing")
    return problems


def _label_problems(
    name: str, kind: str, label: str | None, values: tuple[str, ...], samples: Iterable[Sample]
) -> list[str]:
    problems = []
    main = name + "_total" if kind == "counter" else name
    names = {sample.name for sample in samples}
    if kind == "histogram":
        for suffix in ("_bucket", "_sum", "_count"):
            if name + suffix not in names:
                problems.append(f"{name}{suffix}: missing")
        return problems
    seen = set()
    for sample in samples:
        if sample.name != main:
            continue
        keys = set(sample.labels)
        expected = {label} if label else set()
        if keys != expected:
            problems.append(f"{main}: labels {sorted(keys)}, expected {sorted(expected)}")
        if label:
            seen.add(sample.labels[label])
    if label and set(values) - seen:
        problems.append(f"{main}{{{label}}}: values {sorted(set(values) - seen)} missing")
    if not label and main not in names:
        problems.append(f"{main}: no sample")
    return problems
