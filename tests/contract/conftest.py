from tests.support.redis import redis_base_url, redis_url, sentinel

__all__ = ["redis_base_url", "redis_url", "sentinel"]
