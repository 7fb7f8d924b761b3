"""``GET /v1/workers``: the warm workers, with their start-up phases (from their heartbeats)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from redis.asyncio import Redis

from api.deps import ServicesDep
from genq.contract.constants import WORKERS_SET, worker_key
from genq.contract.schemas import WorkerInfo

router = APIRouter(prefix="/v1/workers", tags=["workers"])


class WorkerList(BaseModel):
    workers: list[WorkerInfo]


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


@router.get("")
async def list_workers(svc: ServicesDep) -> WorkerList:
    return WorkerList(workers=await warm_workers(svc.redis))
