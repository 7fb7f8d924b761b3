"""``GET /v1/queue``: the jobs waiting, the jobs running, and how long a new job may wait at the
warm workers' rate of the last minute (from their heartbeats)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ServicesDep
from api.routes.workers import warm_workers
from genq.schemas import QueueStatus

router = APIRouter(prefix="/v1/queue", tags=["queue"])


@router.get("")
async def queue_status(svc: ServicesDep) -> QueueStatus:
    depth = await svc.store.queued_count()
    workers = await warm_workers(svc.redis)
    rate = sum(w.jobs_per_s for w in workers)
    return QueueStatus(
        depth=depth,
        running=sum(w.jobs_running for w in workers),
        warm_workers=len(workers),
        jobs_per_s=round(rate, 3),
        tokens_per_s=round(sum(w.tokens_per_s for w in workers), 2),
        estimated_wait_s=round(depth / rate, 1) if rate > 0 else None,
    )
