from tests.support.redis import cluster, redis_base_url, redis_url, sentinel

__all__ = ["cluster", "redis_base_url", "redis_url", "sentinel"]
