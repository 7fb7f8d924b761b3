"""The asyncio Redis client every genq process uses, with a retry policy that rides out a Redis
restart (reconnect with backoff for ~30 s) instead of failing the request or the job."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

RETRIES = 20
BACKOFF_CAP_S = 2.0


def async_redis(url: str) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=BACKOFF_CAP_S), retries=RETRIES),
        socket_connect_timeout=2,
        socket_keepalive=True,
        health_check_interval=30,
    )
