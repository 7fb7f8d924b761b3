"""The asyncio Redis client every genq process uses, with a retry policy that rides out a Redis
restart (reconnect with backoff for ~30 s) instead of failing the request or the job.

Its pool *waits* for a free connection when all are busy (``BlockingConnectionPool``). redis-py's
default pool raises "Too many connections" past 100 instead: measured on a GPU, 256 concurrent
``POST /generate`` made the API answer 503.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

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


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for a log line."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def credentials_problem(url: str) -> str | None:
    """One readable line when Redis at ``url`` refuses its credentials (no password given where
    one is needed, a wrong one, an unknown user); None when it takes them, and also when it
    cannot be reached at all: the roles' own retries wait for a Redis that is still starting.
    A role checks this before it starts, since a refused password otherwise looks like a
    connection lost, retried for half a minute (or forever, by Celery) behind a traceback."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        what = (
            f"refused the password in the URL ({exc})"
            if urlsplit(url).password
            else "requires a password and the URL has none"
        )
        return (
            f"Redis at {redacted(url)} {what}: set REDIS_URL to "
            "redis://:PASSWORD@HOST:PORT/0 (rediss:// for TLS), the password percent-encoded"
        )
    except redis.RedisError:
        return None
    finally:
        client.close()
    return None
