"""The Redis client factory: every process builds its clients here, once."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry as RedisRetry

from settings import Settings


def make_redis(settings: Settings, *, socket_timeout: float | None = 5.0) -> redis.Redis:
    """A Redis client that fails fast when Redis is down instead of hanging a request."""
    # redis-py's default retries with up to seconds of backoff; a request should
    # rather fail in well under a second and let the client retry on 503.
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=1,
        socket_timeout=socket_timeout,
        health_check_interval=15,
        retry=RedisRetry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    )
