"""Redis for the client's fleet tests: the shared server under a key prefix of each test's own,
and a private one a test may restart."""

from tests.support.redis import own_redis, redis_base_url, redis_url

__all__ = ["own_redis", "redis_base_url", "redis_url"]
