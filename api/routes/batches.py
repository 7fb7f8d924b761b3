"""``/v1/batches``: submit many jobs at once, follow them as one, cancel them as one. Each job of
a batch is an ordinary job (``/v1/jobs/{id}``) that names its batch in ``batch_id``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response, status

from api.auth import Caller, CallerDep
from api.cancel import ask_to_stop, canceled_before_run
from api.deps import ServicesDep
from api.errors import ApiError
from api.responses import job_url
from api.submit_batch import submit_batch
from genq.contract.batches import BatchCreate, BatchPublic, BatchRecord
from genq.contract.schemas import ErrorBody, JobStatus
from genq.store.batches import BatchStore

PREFIX = "/v1/batches"
router = APIRouter(prefix=PREFIX, tags=["batches"])

_ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 404, 409, 413, 422, 429, 503)}


def batch_url(request: Request, batch_id: str) -> str:
    return f"{request.base_url}{PREFIX[1:]}/{batch_id}"


def public(request: Request, record: BatchRecord, statuses: list[JobStatus | None]) -> BatchPublic:
    return BatchPublic.from_record(
        record, statuses, batch_url(request, record.id), job_url(request, "{id}")
    )


async def _found(
    batches: BatchStore, caller: Caller, batch_id: str
) -> tuple[BatchRecord, list[JobStatus | None]]:
    """The batch, or 404: unknown, expired, or another key's (so ids cannot be probed)."""
    found = await batches.get(batch_id)
    if found is None or (caller.key_name is not None and found[0].owner != caller.key_name):
        raise ApiError(404, "not_found", f"no batch with id {batch_id!r} (unknown or expired)")
    return found


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=_ERRORS)
async def create_batch(
    body: BatchCreate, request: Request, response: Response, svc: ServicesDep, caller: CallerDep
) -> BatchPublic:
    """202 with the batch, every job queued. All or nothing: 422 (naming the item) if any item is
    invalid or the batch has more than ``GENQ_MAX_BATCH_ITEMS`` items; 429 with ``Retry-After``
    when the queue has no room for all of it. Nothing is enqueued in either case."""
    record, jobs = await submit_batch(
        svc, body, batch_url(request, "{id}"), job_url(request, "{id}"), caller.key_name
    )
    batch = public(request, record, [job.status for job in jobs])
    response.headers["Location"] = batch.urls.get
    return batch


@router.get("/{batch_id}", responses=_ERRORS)
async def get_batch(
    batch_id: str, request: Request, svc: ServicesDep, caller: CallerDep
) -> BatchPublic:
    """The batch: ``processing`` until every job is terminal, then ``completed``."""
    return public(request, *await _found(svc.batches, caller, batch_id))


@router.post("/{batch_id}/cancel", responses=_ERRORS | {202: {"model": BatchPublic}})
async def cancel_batch(
    batch_id: str, request: Request, response: Response, svc: ServicesDep, caller: CallerDep
) -> BatchPublic:
    """Its queued jobs are canceled at once and never run; its running ones are aborted inside
    their engines, as ``POST /v1/jobs/{id}/cancel`` does. 200 once every job has ended, 202 if a
    running one takes longer than ``GENQ_CANCEL_WAIT_S``. A completed batch: 409."""
    record, _ = await _found(svc.batches, caller, batch_id)
    if record.completed_at is not None:
        raise ApiError(409, "conflict", f"batch {batch_id} already completed")
    outcomes = await svc.store.transition_many(
        record.jobs, [JobStatus.QUEUED], JobStatus.CANCELED, canceled_before_run()
    )
    running = [
        job_id
        for job_id, (moved, current) in zip(record.jobs, outcomes)
        if not moved and current is JobStatus.PROCESSING
    ]
    if running:
        await ask_to_stop(svc.redis, running)
        wait_s = svc.settings.cancel_wait_s
        await asyncio.gather(*(svc.waiter.wait(job_id, wait_s) for job_id in running))
    record, statuses = await _found(svc.batches, caller, batch_id)
    if record.completed_at is None:
        response.status_code = status.HTTP_202_ACCEPTED
    return public(request, record, statuses)
