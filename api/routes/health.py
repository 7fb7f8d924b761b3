"""``/healthz`` (the process is alive) and ``/readyz`` (it can serve: Redis answers and at least
one worker is warm and consuming)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from api.deps import RedisDep
from api.errors import error_response
from genq.constants import WORKERS_SET, worker_key
from genq.schemas import WorkerInfo

router = APIRouter(tags=["health"])


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


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(redis: RedisDep) -> JSONResponse:
    try:
        await redis.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means "not ready"
        return error_response(503, "not_ready", f"Redis is unreachable: {exc}")
    workers = await warm_workers(redis)
    if not workers:
        return error_response(503, "not_ready", "no warm worker is consuming the queue yet")
    return JSONResponse({"status": "ready", "redis": "ok", "warm_workers": len(workers)})
