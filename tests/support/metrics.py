"""The gateway's /metrics as a test reads it: every sample, or one by name and labels."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import scaled


def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (sample name, sorted labels)."""
    text = httpx.get(base_url + "/metrics", timeout=scaled(5)).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(base_url: str, name: str, **labels: str) -> float:
    return scrape(base_url).get((name, tuple(sorted(labels.items()))), 0.0)
