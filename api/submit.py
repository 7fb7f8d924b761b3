"""Accepting a job: find its model (genq.contract.models), refuse it if that model's queue is full
(or its key has too many jobs active), write its record and put its message on its model's queue,
all in one atomic Redis step (genq.store.jobs)."""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid

from api import metrics, output_options
from api.deps import Services
from api.errors import ApiError
from genq.contract import ssrf
from genq.contract.constants import idempotency_key, model_queue
from genq.contract.models import ModelError
from genq.contract.schemas import JobCreate, JobInput, JobPayload, JobRecord, JobStatus, WebhookSpec
from genq.contract.settings import ApiSettings
from genq.store.jobs import JobStore, OwnerBusy, QueueFull
from genq.store.queue import task_message
from genq.store.workers import warm_workers

MAX_IDEMPOTENCY_KEY_CHARS = 255
# Retry-After for a key at its active-jobs limit: one of its jobs must end first, and no rate is
# kept per key to predict when.
OWNER_BUSY_RETRY_S = 1


def new_job_id() -> str:
    return uuid.uuid4().hex  # 122 random bits: unguessable


def request_hash(body: JobCreate) -> str:
    """The same request (after validation and defaults) always hashes the same."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def resolve_model(svc: Services, asked: str | None) -> str:
    """The model a job goes to; 422 naming the models served when it is not one of them."""
    try:
        return await svc.models.resolve(asked)
    except ModelError as exc:
        raise ApiError(422, "model_not_found", str(exc)) from None


async def overloaded(
    store: JobStore, settings: ApiSettings, full: QueueFull, needed: int = 1
) -> ApiError:
    # Retry-After: how long the model's workers need, at their rate of the last minute, to bring
    # its queue down far enough for the ``needed`` jobs refused (a batch's, or one).
    workers = await warm_workers(store.redis)
    rate = sum(w.jobs_per_s for w in workers if full.model in (None, w.model))
    excess = full.waiting + needed - settings.max_queued
    retry_after = min(300, max(1, math.ceil(excess / rate))) if rate > 0 else 5
    what = f"; a batch of {needed} does not fit" if needed > 1 else ""
    of = f" for model {full.model!r}" if full.model is not None else ""
    return ApiError(
        429,
        "overloaded",
        f"{full.waiting} jobs are waiting{of} (limit {settings.max_queued}){what}; "
        f"retry after {retry_after} s",
        {"Retry-After": str(retry_after)},
    )


async def check_webhook(svc: Services, webhook: WebhookSpec) -> None:
    """422 with the reason when the webhook's URL points somewhere genq does not send to."""
    try:
        await ssrf.resolve_async(webhook.url, svc.webhook_allow)
    except ssrf.UnsafeUrl as exc:
        raise ApiError(422, "invalid_request", f"webhook: {exc}") from None


def owner_busy(owner: str | None, active: int, adding: int = 1) -> ApiError:
    more = "" if adding == 1 else f" ({adding} more would not fit)"
    return ApiError(
        429,
        "rate_limited",
        f"key {owner!r} has {active} jobs queued or processing, its limit of active "
        f"jobs{more}; retry after {OWNER_BUSY_RETRY_S} s, or once some have finished",
        {"Retry-After": str(OWNER_BUSY_RETRY_S)},
    )


async def submit_job(
    svc: Services,
    job_input: JobInput,
    idempotency: tuple[str, str] | None = None,
    webhook: WebhookSpec | None = None,
    job_url: str = "",
    *,
    owner: str | None = None,
    model: str | None = None,
    job_id: str | None = None,
) -> tuple[JobRecord, bool]:
    """Returns the job and whether it is new. With ``idempotency=(Idempotency-Key, request
    hash)`` a repeated key returns the job it created (409 if the request differs). A job with a
    ``webhook`` keeps ``job_url`` (its URL, ``{id}`` filled in) for the webhook payloads.
    ``owner``: the caller's key name (api.auth ``Caller.key_name``): only it sees the job, its
    Idempotency-Keys are its own, and 429 once it has its most active jobs. ``model``: the one
    the request names (None: the default); 422 if it is not served. ``job_id``: the new job's id
    when the caller made it (:func:`new_job_id`), to watch for its end before it exists
    (api.waiter ``expecting``)."""
    store, settings = svc.store, svc.settings
    output_options.check(job_input.sampling, settings)
    model = await resolve_model(svc, model)
    await output_options.check_engines(svc, job_input.sampling, model)
    if webhook is not None:
        await check_webhook(svc, webhook)
    job_id = job_id or new_job_id()
    record = JobRecord(
        id=job_id,
        status=JobStatus.QUEUED,
        model=model,
        created_at=time.time(),
        input=job_input,
        webhook=webhook.url if webhook else None,
        webhook_events_filter=webhook.events if webhook else None,
        url=job_url.format(id=job_id) if webhook and job_url else None,
        owner=owner,
    )
    idem = None
    if idempotency is not None:
        key, digest = idempotency
        if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
            raise ApiError(
                422,
                "invalid_request",
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
            )
        idem = (idempotency_key(key, owner), json.dumps({"id": record.id, "hash": digest}))
    # Record and message are written together: a worker always finds the record, and a job is
    # never accepted without its message. A replay of an Idempotency-Key returns its job even
    # when the queue is full.
    payload = JobPayload(
        id=record.id, input=job_input, created_at=record.created_at, webhook=webhook, model=model
    )
    queue = model_queue(settings.queue, model)
    message = (queue, task_message(svc.celery, payload, queue))
    max_active = svc.access.max_active_jobs(owner) if owner is not None else 2**62
    try:
        existing = await store.create(record, idem, settings.max_queued, message, max_active)
    except QueueFull as full:
        raise await overloaded(store, settings, full) from None
    except OwnerBusy as busy:
        raise owner_busy(owner, busy.active) from None
    if existing is not None:
        return await _existing(store, existing, idempotency), False
    metrics.JOBS_SUBMITTED.inc()
    return record, True


async def _existing(store: JobStore, existing: str, idempotency: tuple[str, str]) -> JobRecord:
    first = json.loads(existing)
    if first["hash"] != idempotency[1]:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"Idempotency-Key {idempotency[0]!r} was used for a different request "
            f"(job {first['id']})",
        )
    record = await store.get(first["id"])
    if record is None:
        raise ApiError(404, "not_found", f"job {first['id']} of this Idempotency-Key has expired")
    return record
