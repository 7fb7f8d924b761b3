"""The asyncio Redis client every genq process uses, with a retry policy that rides out a Redis
restart (reconnect with backoff for ~30 s) instead of failing the request or the job.

Its pool *waits* for a free connection when all are busy (``BlockingConnectionPool``). redis-py's
default pool raises "Too many connections" past 100 instead: measured on a GPU, 256 concurrent
``POST /generate`` made the API answer 503.
"""

from __future__ import annotations

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry as SyncRetry

RETRIES = 20
BACKOFF_CAP_S = 2.0
MAX_CONNECTIONS = 512  # per process; Redis itself takes 10,000 clients
POOL_WAIT_S = 30.0  # past this with every connection busy, the command fails (503 in the API)
_CONNECTION = {
    "decode_responses": True,
    "socket_connect_timeout": 2,
    "socket_keepalive": True,
    "health_check_interval": 30,
}


def async_redis(url: str, max_connections: int = MAX_CONNECTIONS) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=BACKOFF_CAP_S), retries=RETRIES),
        **_CONNECTION,
    )
    return Redis.from_pool(pool)


def sync_redis(url: str) -> redis.Redis:
    """The blocking client, with the same retry policy, for code that runs in threads (the
    webhooks process)."""
    return redis.Redis.from_url(
        url,
        retry=SyncRetry(
            ExponentialWithJitterBackoff(base=0.05, cap=BACKOFF_CAP_S), retries=RETRIES
        ),
        **_CONNECTION,
    )
