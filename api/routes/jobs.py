"""``/v1/jobs``: submit a job, read it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from api.deps import CeleryDep, SettingsDep, StoreDep
from api.errors import ApiError
from api.submit import submit_job
from genq.schemas import ErrorBody, JobCreate, JobPublic, JobRecord

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_ERRORS = {404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def public(request: Request, record: JobRecord) -> JobPublic:
    return JobPublic.from_record(record, str(request.url_for("get_job", job_id=record.id)))


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS)
async def create_job(
    body: JobCreate,
    request: Request,
    response: Response,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
) -> JobPublic:
    record = await submit_job(store, celery, settings, body.to_input())
    job = public(request, record)
    response.headers["Location"] = job.urls.get
    return job


@router.get("/{job_id}", responses=_ERRORS)
async def get_job(job_id: str, request: Request, store: StoreDep) -> JobPublic:
    record = await store.get(job_id)
    if record is None:
        raise ApiError(404, "not_found", f"no job with id {job_id!r} (unknown or expired)")
    return public(request, record)
