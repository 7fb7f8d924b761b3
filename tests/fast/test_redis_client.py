"""genq's Redis client under more concurrent commands than it has connections (real Redis)."""

from __future__ import annotations

import asyncio

from genq.store.embedded import EmbeddedRedis
from genq.store.redis_client import async_redis


def test_a_busy_pool_waits_instead_of_failing(redis_server: EmbeddedRedis) -> None:
    # redis-py's default pool raises "Too many connections" past its limit; the API answered
    # 503 to 256 concurrent requests that way. genq's pool makes the extra commands wait.
    async def main() -> tuple[list[object], int]:
        client = async_redis(redis_server.url, max_connections=4)
        try:
            await client.delete("genq-test:n")
            slow = [client.blpop(["genq-test:empty"], timeout=0.2) for _ in range(8)]
            fast = [client.incr("genq-test:n") for _ in range(300)]
            results = await asyncio.gather(*slow, *fast)
            return results, int(await client.get("genq-test:n"))
        finally:
            await client.aclose()

    results, count = asyncio.run(main())
    assert results[:8] == [None] * 8  # the blocking ones timed out normally
    assert sorted(results[8:]) == list(range(1, 301))
    assert count == 300
