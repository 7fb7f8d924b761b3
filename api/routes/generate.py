"""The seed's synchronous ``POST /generate``: enqueue a job, wait for it, answer with the text."""

from __future__ import annotations

import time

from fastapi import APIRouter

from api.auth import CallerDep
from api.deps import ServicesDep
from api.errors import ApiError
from api.submit import new_job_id, submit_job
from genq.contract.schemas import ErrorBody, GenerateRequest, GenerateResponse, JobRecord, JobStatus

router = APIRouter(tags=["generate"])

# A failed job's error type -> the status /generate answers with.
_FAILED_STATUS = {"invalid_input": 422}


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


def succeeded(
    done: JobRecord | None, job_id: str, timeout_s: float, stopping: bool = False
) -> JobRecord:
    """A waited-for job that succeeded, or the error a synchronous caller gets instead: its
    failure (422 for input the engine refused), 409 canceled, 504 still running after
    ``timeout_s``, 503 still running when this API process is ``stopping`` (api.shutdown)."""
    if done is None:
        raise ApiError(503, "unavailable", f"job {job_id} disappeared (expired?)")
    if done.status is JobStatus.SUCCEEDED and done.output is not None:
        return done
    if done.status is JobStatus.FAILED and done.error is not None:
        raise ApiError(
            _FAILED_STATUS.get(done.error.type, 503),
            done.error.type,
            f"job {done.id} failed: {done.error.message}",
        )
    if done.status is JobStatus.CANCELED:
        raise ApiError(409, "canceled", f"job {done.id} was canceled")
    if stopping:
        raise ApiError(
            503,
            "unavailable",
            f"this API process is shutting down; job {done.id} is still {done.status.value}: "
            f"poll /v1/jobs/{done.id} for its result",
            headers={"Retry-After": "1"},
        )
    raise ApiError(
        504,
        "timeout",
        f"job {done.id} is still {done.status.value} after {timeout_s:g} s; "
        f"poll /v1/jobs/{done.id} for its result",
    )
