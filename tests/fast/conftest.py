"""The fast tier gets a Redis of its own: the e2e tier's workers (janitors included) must never
see, or touch, the jobs these tests make."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from genq.store.embedded import EmbeddedRedis
from genq.store.jobs import JobStore


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("fast-redis"))).start()
    yield server
    server.stop()


@pytest.fixture
def sync_redis(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A blocking client on a flushed Redis (decoded strings)."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def with_store(redis_server: EmbeddedRedis) -> Callable[..., object]:
    """Run ``fn(store, redis)`` in a fresh event loop against a flushed Redis."""

    def run(fn: Callable[[JobStore, Redis], Awaitable[object]]) -> object:
        async def main() -> object:
            redis = Redis.from_url(redis_server.url, decode_responses=True)
            await redis.flushdb()
            try:
                return await fn(JobStore(redis, ttl_s=600), redis)
            finally:
                await redis.aclose()

        return asyncio.run(main())

    return run
