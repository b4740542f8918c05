from tests.support.redis import own_redis, redis_base_url, redis_url

__all__ = ["own_redis", "redis_base_url", "redis_url"]
