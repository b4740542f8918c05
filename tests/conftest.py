"""What every test package shares: the Redis fixtures, registered once for the whole suite
(a session-scoped fixture defined in several conftests is several fixtures, each with its own
private redis-server where no shared one answers), and the run's settings in the header.

Helpers live in ``tests/support/`` (one module per concern), never in a conftest: a conftest is
not imported by name."""

from __future__ import annotations

import pytest

from tests.support.redis import cluster, own_redis, redis_base_url, redis_url, sentinel
from tests.support.servers import TIMEOUT_FACTOR
from tests.support.skips import IN_CI

__all__ = ["cluster", "own_redis", "redis_base_url", "redis_url", "sentinel"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    missing = "fail (CI)" if IN_CI else "skip, saying why"
    return [f"gateway: timeout factor {TIMEOUT_FACTOR:g}; tests whose tools are missing {missing}"]
