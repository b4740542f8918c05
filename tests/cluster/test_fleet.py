"""The Redis fleet tests (fan-out, presence, direct messages, kill -9 of a worker) on a 2-worker
fleet whose broker is a 3-master Redis Cluster: room fan-out over sharded pub/sub, direct
messages on their own shard, presence and the rate limit spread over the shards."""

import pytest

from tests.redis.test_fleet import (
    test_a_killed_worker_is_replaced_and_its_users_age_out,
    test_fanout_presence_and_direct_messages_cross_workers,
)

pytestmark = pytest.mark.redis

__all__ = [
    "test_a_killed_worker_is_replaced_and_its_users_age_out",
    "test_fanout_presence_and_direct_messages_cross_workers",
]
