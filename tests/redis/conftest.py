from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from gateway.broker.redis import RedisBroker
from tests.redis.fleet import fleet_env
from tests.support.fleet import fleet as start_fleet
from tests.support.servers import GatewayProcess


@pytest.fixture
def fleet(redis_url: str) -> Iterator[GatewayProcess]:
    """Two workers on Redis (this test's key prefix), both serving."""
    with start_fleet(fleet_env(redis_url)) as server:
        yield server


StartBroker = Callable[[str, Any], Awaitable[RedisBroker]]


@pytest.fixture
async def start_broker() -> AsyncIterator[StartBroker]:
    """Starts a broker (one stands for one worker) on a URL with a deliver callback; closes
    every one the test started."""
    started: list[RedisBroker] = []

    async def start(url: str, deliver: Any) -> RedisBroker:
        broker = RedisBroker(url, deliver, 100)
        await broker.start()
        started.append(broker)
        return broker

    yield start
    for broker in reversed(started):
        await broker.aclose()
