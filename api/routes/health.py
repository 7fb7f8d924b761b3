"""``/healthz`` (the process is alive) and ``/readyz`` (it can serve: Redis answers and at least
one worker is warm and consuming).

Every ``/readyz`` answer, ready or not, carries the instance token of the process that answers
(:data:`INSTANCE_HEADER`), when it was started with one (:data:`INSTANCE_TOKEN_ENV`): `genq up`
makes a token, gives it to the API it starts, and says "ready" only when the answer carries it,
so that another program on the port, answering ``/readyz`` 200, cannot pass for genq. Not a
secret: it tells whose answer it is, it grants nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import Services, ServicesDep
from api.errors import error_response
from genq.contract.schemas import ErrorBody
from genq.store.workers import warm_workers

# Named alike in genq.cli.up, which cannot import the API (tests/fast/test_readiness_token.py).
INSTANCE_TOKEN_ENV = "GENQ_INSTANCE_TOKEN"
INSTANCE_HEADER = "X-Genq-Instance"

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"headers": {INSTANCE_HEADER: {"description": "this process's instance token"}}},
        503: {"model": ErrorBody, "description": "not ready, and why"},
    },
)
async def readyz(svc: ServicesDep, request: Request) -> JSONResponse:
    response = await _readiness(svc)
    if token := request.app.state.instance_token:
        response.headers[INSTANCE_HEADER] = token
    return response


async def _readiness(svc: Services) -> JSONResponse:
    try:
        await svc.redis.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means "not ready"
        return error_response(503, "not_ready", f"Redis is unreachable: {exc}")
    workers = await warm_workers(svc.redis)
    if not workers:
        return error_response(503, "not_ready", "no warm worker is consuming the queue yet")
    return JSONResponse({"status": "ready", "redis": "ok", "warm_workers": len(workers)})
