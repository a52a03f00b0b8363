"""loom-redis: the prompt queue on Redis Streams that many servers and workers share."""

from loom_redis.queue import RedisQueue, RedisQueueOptions

__all__ = ["RedisQueue", "RedisQueueOptions"]
