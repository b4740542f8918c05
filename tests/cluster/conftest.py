import uuid
from collections.abc import Iterator

import pytest

from tests.redis.fleet import fleet_env
from tests.support.fleet import fleet as start_fleet
from tests.support.redis import cluster
from tests.support.servers import GatewayProcess
from tests.support.topology import ClusterTopology

__all__ = ["cluster", "fleet"]


def cluster_env(topology: ClusterTopology) -> dict[str, str]:
    """The Redis suite's fleet settings on the cluster, keys under a prefix of the test's own;
    the shared rate limit on (its keys live on the cluster too)."""
    env = fleet_env(topology.url(f"test-{uuid.uuid4().hex[:12]}"))
    env["GATEWAY_RATE_LIMIT"] = "1000/1"
    return env


@pytest.fixture
def fleet(cluster: ClusterTopology) -> Iterator[GatewayProcess]:
    """Two workers on a 3-master Redis Cluster, both serving."""
    with start_fleet(cluster_env(cluster)) as server:
        yield server
