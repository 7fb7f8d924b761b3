"""``GET /v1/workers``: the warm workers, with their start-up phases (from their heartbeats)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ServicesDep
from genq.contract.schemas import WorkerInfo
from genq.store.workers import warm_workers

router = APIRouter(prefix="/v1/workers", tags=["workers"])


class WorkerList(BaseModel):
    workers: list[WorkerInfo]


@router.get("")
async def list_workers(svc: ServicesDep) -> WorkerList:
    return WorkerList(workers=await warm_workers(svc.redis))
