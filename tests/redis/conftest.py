from collections.abc import Iterator

import pytest

from tests.redis.fleet import fleet_env
from tests.support.fleet import fleet as start_fleet
from tests.support.redis import own_redis, redis_base_url, redis_url
from tests.support.servers import GatewayProcess

__all__ = ["fleet", "own_redis", "redis_base_url", "redis_url"]


@pytest.fixture
def fleet(redis_url: str) -> Iterator[GatewayProcess]:
    """Two workers on Redis (this test's key prefix), both serving."""
    with start_fleet(fleet_env(redis_url)) as server:
        yield server
