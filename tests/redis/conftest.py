from collections.abc import Iterator

import pytest

from tests.redis.fleet import fleet_env
from tests.support.fleet import fleet as start_fleet
from tests.support.servers import GatewayProcess


@pytest.fixture
def fleet(redis_url: str) -> Iterator[GatewayProcess]:
    """Two workers on Redis (this test's key prefix), both serving."""
    with start_fleet(fleet_env(redis_url)) as server:
        yield server
