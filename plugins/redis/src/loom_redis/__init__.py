"""loom-redis: the prompt queue on Redis Streams that many servers and workers share.

``RedisQueue`` and ``RedisQueueOptions`` are imported on first access, so loading the plugin
(every ``loom`` command does) does not import redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom_redis.queue import RedisQueue, RedisQueueOptions

__all__ = ["RedisQueue", "RedisQueueOptions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from loom_redis import queue

        return getattr(queue, name)
    raise AttributeError(f"module 'loom_redis' has no attribute {name!r}")
