"""The Redis fleet tests (fan-out, presence, direct messages, kill -9 of a worker), run on a
2-worker fleet whose broker is Redis behind Sentinel, with ``GATEWAY_BROKER_MIN_REPLICAS=1``:
every kept message waits for a replica's confirmation before anyone hears it."""

import pytest

from tests.redis.scenarios import (
    a_killed_worker_is_replaced_and_its_users_age_out,
    fanout_presence_and_direct_messages_cross_workers,
)
from tests.support.servers import GatewayProcess

pytestmark = pytest.mark.redis


async def test_a_killed_worker_is_replaced_and_its_users_age_out(fleet: GatewayProcess) -> None:
    await a_killed_worker_is_replaced_and_its_users_age_out(fleet)


async def test_fanout_presence_and_direct_messages_cross_workers(fleet: GatewayProcess) -> None:
    await fanout_presence_and_direct_messages_cross_workers(fleet)
