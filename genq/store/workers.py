"""The warm workers, as their heartbeats left them in Redis (worker.host.runtime writes them)."""

from __future__ import annotations

from redis.asyncio import Redis

from genq.contract.constants import WORKERS_SET, worker_key
from genq.contract.schemas import WorkerInfo


async def warm_workers(redis: Redis) -> list[WorkerInfo]:
    """Workers whose heartbeat key is alive; names whose key expired are pruned."""
    names = sorted(await redis.smembers(WORKERS_SET))
    if not names:
        return []
    values = await redis.mget([worker_key(n) for n in names])
    stale = [n for n, v in zip(names, values) if v is None]
    if stale:
        await redis.srem(WORKERS_SET, *stale)
    return [WorkerInfo.model_validate_json(v) for v in values if v is not None]
