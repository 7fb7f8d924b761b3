"""The synchronous ``POST /generate`` of the plain FastAPI endpoint genq replaces, kept as it was:
enqueue a job, wait for it, answer with the text."""

from __future__ import annotations

import time

from fastapi import APIRouter

from api.auth import CallerDep
from api.deps import ServicesDep
from api.responses import succeeded
from api.submit import new_job_id, submit_job
from genq.contract.schemas import ErrorBody, GenerateRequest, GenerateResponse

router = APIRouter(tags=["generate"])

# A failed job's error type -> the status /generate answers with.


@router.post(
    "/generate",
    responses={s: {"model": ErrorBody} for s in (400, 401, 409, 413, 422, 429, 503, 504)},
)
async def generate(body: GenerateRequest, svc: ServicesDep, caller: CallerDep) -> GenerateResponse:
    t0 = time.perf_counter()
    settings = svc.settings
    job_id = new_job_id()
    with svc.waiter.expecting(job_id) as expected:
        await submit_job(
            svc, body.to_input(), owner=caller.key_name, model=body.model, job_id=job_id
        )
        done = succeeded(
            await svc.waiter.wait(job_id, settings.generate_timeout_s, expected),
            job_id,
            settings.generate_timeout_s,
            stopping=svc.waiter.draining,
        )
    return GenerateResponse(
        generated_text=done.output.text,
        latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        id=done.id,
    )
