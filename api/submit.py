"""Accepting a job: write its record, then put its message on the queue."""

from __future__ import annotations

import logging
import time
import uuid

from celery import Celery
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from genq.constants import TASK_GENERATE
from genq.schemas import JobInput, JobPayload, JobRecord, JobStatus
from genq.settings import ApiSettings
from genq.store import JobStore

log = logging.getLogger(__name__)

_ARGSREPR_CHARS = 80  # what Flower shows of a prompt


def new_job_id() -> str:
    return uuid.uuid4().hex  # 122 random bits: unguessable


def _argsrepr(job_input: JobInput) -> str:
    text = job_input.prompt if job_input.prompt is not None else job_input.messages[-1].content
    short = text if len(text) <= _ARGSREPR_CHARS else text[: _ARGSREPR_CHARS - 1] + "…"
    return repr(short)


async def submit_job(
    store: JobStore, celery: Celery, settings: ApiSettings, job_input: JobInput
) -> JobRecord:
    record = JobRecord(
        id=new_job_id(), status=JobStatus.QUEUED, created_at=time.time(), input=job_input
    )
    # The record exists before any worker can see the message, so a worker always finds it.
    await store.create(record)
    payload = JobPayload(id=record.id, input=job_input, created_at=record.created_at)
    try:
        await run_in_threadpool(
            celery.send_task,
            TASK_GENERATE,
            args=[payload.model_dump(mode="json")],
            task_id=record.id,
            queue=settings.queue,
            argsrepr=_argsrepr(job_input),
            kwargsrepr="{}",
        )
    except Exception as exc:
        # Not accepted: remove the record so nothing half-made is left behind.
        log.warning("could not enqueue job %s: %s", record.id, exc)
        await store.delete(record.id)
        raise ApiError(503, "unavailable", "the queue is unreachable; retry shortly",
                       {"Retry-After": "1"}) from exc  # fmt: skip
    return record
