"""``/v1/jobs``: submit a job, read it."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status

from api.auth import CallerDep, not_found, owned_job
from api.cancel import ask_to_stop, canceled_before_run
from api.deps import ServicesDep
from api.errors import ApiError
from api.responses import JOBS_PREFIX, job_url, prefer_wait, public, waited
from api.submit import request_hash, submit_job
from genq.contract.schemas import (
    MAX_DEADLINE_S,
    ErrorBody,
    JobCreate,
    JobPublic,
    JobStatus,
)
from genq.contract.webhooks import completed_delivery
from genq.store.jobs import TransitionRefused

router = APIRouter(prefix=JOBS_PREFIX, tags=["jobs"])

_ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 404, 409, 413, 422, 429, 503)}

_REPLAY = {200: {"model": JobPublic, "description": "the job this Idempotency-Key created"}}


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS | _REPLAY)
async def create_job(
    body: JobCreate,
    request: Request,
    response: Response,
    svc: ServicesDep,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header()] = None,
    cancel_after: Annotated[float | None, Header(gt=0, le=MAX_DEADLINE_S)] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> JobPublic:
    """202 with a new job; 200 with the job an earlier request with the same
    ``Idempotency-Key`` and body created (409 if the body differs); 429 when the queue is full.
    ``Cancel-After: <seconds>`` is the ``deadline_s`` field as a header. ``Prefer: wait=N``
    (N ≤ 60) answers once the job is finished (200) or after N seconds (202)."""
    wait_s = prefer_wait(prefer)
    if cancel_after is not None:
        if body.deadline_s is not None and body.deadline_s != cancel_after:
            raise ApiError(422, "invalid_request", "Cancel-After and deadline_s disagree")
        body.deadline_s = cancel_after
    idempotency = None if idempotency_key is None else (idempotency_key, request_hash(body))
    url_template = job_url(request, "{id}")
    record, new = await submit_job(
        svc,
        body.to_input(),
        idempotency,
        body.webhook_spec(),
        url_template,
        owner=caller.key_name,
        model=body.model,
    )
    if wait_s is not None:
        record = await waited(svc, record, wait_s, response)
    job = public(request, record)
    response.headers["Location"] = job.urls.get
    if not new or record.status.is_terminal():
        response.status_code = status.HTTP_200_OK
    return job


@router.post("/{job_id}/cancel", responses=_ERRORS | {202: {"model": JobPublic}})
async def cancel_job(
    job_id: str,
    request: Request,
    response: Response,
    svc: ServicesDep,
    caller: CallerDep,
) -> JobPublic:
    """A queued job is canceled at once and never runs (200). A running one is aborted inside the
    engine and ends ``canceled`` with its partial output (200 once it has, 202 if it takes longer
    than ``GENQ_CANCEL_WAIT_S``). A finished job: 409."""
    store = svc.store
    if caller.key_name is not None:
        await owned_job(svc, caller, job_id)  # 404 for another key's job; its owner never changes
    try:
        await store.transition(
            job_id, [JobStatus.QUEUED], JobStatus.CANCELED, canceled_before_run()
        )
    except TransitionRefused as refused:
        if refused.current is None:
            raise not_found(job_id)
        if refused.current.is_terminal():
            raise ApiError(409, "conflict", f"job {job_id} already {refused.current.value}")
        await ask_to_stop(store.redis, [job_id])  # running
        record = await svc.waiter.wait(job_id, svc.settings.cancel_wait_s)
        if record is None:
            raise ApiError(404, "not_found", f"job {job_id!r} expired") from None
        if not record.status.is_terminal():
            response.status_code = status.HTTP_202_ACCEPTED
        return public(request, record)
    return public(request, await store.get(job_id))


@router.post(
    "/{job_id}/webhooks/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_ERRORS,
)
async def redeliver_webhook(
    job_id: str, request: Request, svc: ServicesDep, caller: CallerDep
) -> JobPublic:
    """Send the finished job's ``completed`` event again (a new attempt with the same
    ``webhook-id``, retried like the first). 409 if the job has no webhook or is not finished."""
    record = await owned_job(svc, caller, job_id)
    if record.webhook is None:
        raise ApiError(409, "conflict", f"job {job_id} has no webhook")
    if not record.status.is_terminal():
        raise ApiError(409, "conflict", f"job {job_id} is {record.status.value}, not finished")
    await svc.store.schedule_webhook(
        dataclasses.replace(completed_delivery(job_id), nonce=uuid.uuid4().hex)
    )
    return public(request, record)


@router.get("/{job_id}", responses=_ERRORS)
async def get_job(
    job_id: str,
    request: Request,
    response: Response,
    svc: ServicesDep,
    caller: CallerDep,
    prefer: Annotated[str | None, Header()] = None,
) -> JobPublic:
    """The job; while it runs, ``output`` holds its text so far. ``Prefer: wait=N`` (N ≤ 60)
    answers once it is finished or after N seconds, whichever is first."""
    wait_s = prefer_wait(prefer)
    record = await owned_job(svc, caller, job_id)
    if wait_s is not None:
        record = await waited(svc, record, wait_s, response)
    return public(request, record)
