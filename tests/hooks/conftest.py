from tests.support.redis import redis_base_url, redis_url

__all__ = ["redis_base_url", "redis_url"]
