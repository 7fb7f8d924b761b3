"""``/healthz`` (the process is alive) and ``/readyz`` (it can serve: Redis answers and at least
one worker is warm and consuming)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ServicesDep
from api.errors import error_response
from genq.contract.schemas import ErrorBody
from genq.store.workers import warm_workers

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorBody, "description": "not ready, and why"}})
async def readyz(svc: ServicesDep) -> JSONResponse:
    try:
        await svc.redis.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means "not ready"
        return error_response(503, "not_ready", f"Redis is unreachable: {exc}")
    workers = await warm_workers(svc.redis)
    if not workers:
        return error_response(503, "not_ready", "no warm worker is consuming the queue yet")
    return JSONResponse({"status": "ready", "redis": "ok", "warm_workers": len(workers)})
