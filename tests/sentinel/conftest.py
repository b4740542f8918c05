import uuid
from collections.abc import Iterator

import pytest

from tests.redis.fleet import fleet_env
from tests.support.fleet import fleet as start_fleet
from tests.support.redis import sentinel
from tests.support.servers import GatewayProcess
from tests.support.topology import SentinelTopology

__all__ = ["fleet", "sentinel"]

API_KEY = "sentinel-test-key"


def sentinel_env(topology: SentinelTopology, min_replicas: int = 1) -> dict[str, str]:
    """The Redis suite's fleet settings, on Sentinel, waiting for ``min_replicas``, with the
    publish API on; keys under a prefix of the test's own."""
    env = fleet_env(topology.url(f"test-{uuid.uuid4().hex[:12]}"))
    env["GATEWAY_BROKER_MIN_REPLICAS"] = str(min_replicas)
    env["GATEWAY_API_KEY"] = API_KEY
    return env


@pytest.fixture
def fleet(sentinel: SentinelTopology) -> Iterator[GatewayProcess]:
    """Two workers on Sentinel with ``GATEWAY_BROKER_MIN_REPLICAS=1``, both serving."""
    with start_fleet(sentinel_env(sentinel)) as server:
        yield server
