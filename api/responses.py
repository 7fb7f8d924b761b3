"""What the job routes answer with, shared by genq's routes and the OpenAI front: a job's public
shape and URL, waiting on ``Prefer: wait``, a synchronous caller's result or error, Server-Sent
Events."""

from __future__ import annotations

from fastapi import Request, Response

from api.deps import Services
from api.errors import ApiError
from genq.contract.schemas import JobPublic, JobRecord, JobStatus

JOBS_PREFIX = "/v1/jobs"
_FAILED_STATUS = {"invalid_input": 422}
MAX_WAIT_S = 60  # the longest ``Prefer: wait`` (as Replicate's API)


def prefer_wait(prefer: str | None) -> int | None:
    """``Prefer: wait=N`` (RFC 7240; other preferences beside it are ignored) -> N seconds;
    ``wait`` alone is the longest wait. None when the header asks for no wait."""
    for preference in (prefer or "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if not value:
            return MAX_WAIT_S
        if not value.isdigit() or not 1 <= int(value) <= MAX_WAIT_S:
            raise ApiError(
                422,
                "invalid_request",
                f"Prefer: wait={value} must be a whole number of seconds from 1 to {MAX_WAIT_S}",
            )
        return int(value)
    return None


async def waited(svc: Services, record: JobRecord, wait_s: int, response: Response) -> JobRecord:
    """The job once terminal, or as it is after ``wait_s``."""
    response.headers["Preference-Applied"] = f"wait={wait_s}"
    if record.status.is_terminal():
        return record
    done = await svc.waiter.wait(record.id, wait_s)
    if done is None:
        raise ApiError(404, "not_found", f"job {record.id} expired while waited for")
    return done


def job_url(request: Request, job_id: str) -> str:
    # What request.url_for("get_job", ...) gives, without its search through every route.
    return f"{request.base_url}{JOBS_PREFIX[1:]}/{job_id}"


def public(request: Request, record: JobRecord) -> JobPublic:
    return JobPublic.from_record(record, job_url(request, record.id))


SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}


def sse(event: str, data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


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
