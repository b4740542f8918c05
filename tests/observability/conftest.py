"""Redis for the fleet tests: the shared fixtures (a key prefix per test, removed after)."""

from tests.support.redis import redis_base_url, redis_url

__all__ = ["redis_base_url", "redis_url"]
