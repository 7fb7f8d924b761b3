"""``GET /v1/queue``: the jobs waiting, the jobs running, and how long a new job may wait at the
warm workers' rate of the last minute (from their heartbeats): in all, and per model."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ServicesDep
from genq.contract.schemas import QueueRate, QueueStatus, WorkerInfo
from genq.store.workers import warm_workers

router = APIRouter(prefix="/v1/queue", tags=["queue"])


def _rate(depth: int, workers: list[WorkerInfo]) -> QueueRate:
    rate = sum(w.jobs_per_s for w in workers)
    return QueueRate(
        depth=depth,
        running=sum(w.jobs_running for w in workers),
        warm_workers=len(workers),
        jobs_per_s=round(rate, 3),
        tokens_per_s=round(sum(w.tokens_per_s for w in workers), 2),
        estimated_wait_s=round(depth / rate, 1) if rate > 0 else None,
    )


@router.get("")
async def queue_status(svc: ServicesDep) -> QueueStatus:
    names = await svc.models.known()
    total, depths = await svc.store.queued_counts(names)
    workers = await warm_workers(svc.redis)
    return QueueStatus(
        **_rate(total, workers).model_dump(),
        models={
            name: _rate(depth, [w for w in workers if w.model == name])
            for name, depth in zip(names, depths)
        },
    )
