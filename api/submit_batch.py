"""Accepting a batch: every item checked first (limits, webhooks), then the batch, all its jobs
and all their queue messages written in one atomic Redis step (genq.store.batches): the batch is
accepted whole, or refused whole with nothing enqueued."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from api import metrics, output_options
from api.deps import Services
from api.errors import ApiError
from api.submit import new_job_id, overloaded, owner_busy
from genq.contract import ssrf
from genq.contract.batches import BatchCreate, BatchRecord
from genq.contract.constants import model_queue
from genq.contract.models import ModelError
from genq.contract.schemas import JobPayload, JobRecord, JobStatus
from genq.store.jobs import OwnerBusy, QueueFull
from genq.store.queue import task_message


def _check_size(svc: Services, n: int) -> None:
    limit = svc.settings.max_batch_items
    if n > limit:
        raise ApiError(
            422,
            "invalid_request",
            f"items: {n} items; a batch has at most {limit} (GENQ_MAX_BATCH_ITEMS)",
        )


def _check_fits(svc: Services, models: list[str]) -> None:
    """422 when the batch has more jobs of one model than its queue ever holds: it could never
    fit, however long the caller waits (not a 429)."""
    model, n = Counter(models).most_common(1)[0]
    if n > svc.settings.max_queued:
        raise ApiError(
            422,
            "invalid_request",
            f"items: {n} items of model {model!r}; more than its queue ever holds "
            f"({svc.settings.max_queued}, GENQ_MAX_QUEUED): split the batch",
        )


async def _models(svc: Services, body: BatchCreate) -> list[str]:
    """Each item's model (an item names its own or inherits the batch's); 422 naming the first
    item whose model is not served."""
    resolved: dict[str | None, str] = {}
    for i, item in enumerate(body.items):
        if item.model not in resolved:
            try:
                resolved[item.model] = await svc.models.resolve(item.model)
            except ModelError as exc:
                raise ApiError(422, "model_not_found", f"items.{i}.model: {exc}") from None
    return [resolved[item.model] for item in body.items]


async def _check_webhooks(svc: Services, body: BatchCreate) -> None:
    """422 naming the first field whose webhook URL points where genq does not send; each
    distinct URL is resolved once, all at once."""
    where: dict[str, str] = {}
    if body.webhook is not None:
        where[body.webhook] = "webhook"
    for i, item in enumerate(body.items):
        if item.webhook is not None:
            where.setdefault(item.webhook, f"items.{i}.webhook")
    checks = [ssrf.resolve_async(url, svc.webhook_allow) for url in where]
    for field, result in zip(where.values(), await asyncio.gather(*checks, return_exceptions=True)):
        if isinstance(result, ssrf.UnsafeUrl):
            raise ApiError(422, "invalid_request", f"{field}: {result}")
        if isinstance(result, BaseException):
            raise result


def _job(
    svc: Services,
    body: BatchCreate,
    i: int,
    model: str,
    batch_id: str,
    now: float,
    job_url: str,
    owner: str | None,
) -> tuple[JobRecord, str, str]:
    """Item ``i`` as a queued job of the batch (of ``model``), its queue and its message."""
    item = body.items[i]
    webhook = item.webhook_spec()  # an item's own webhook, if it asks for one
    job_input = item.to_input()
    record = JobRecord(
        id=new_job_id(),
        status=JobStatus.QUEUED,
        model=model,
        created_at=now,
        input=job_input,
        webhook=webhook.url if webhook else None,
        webhook_events_filter=webhook.events if webhook else None,
        batch_id=batch_id,
        owner=owner,
    )
    if webhook is not None:
        record.url = job_url.format(id=record.id)
    payload = JobPayload(
        id=record.id, input=job_input, created_at=now, webhook=webhook, model=model
    )
    queue = model_queue(svc.settings.queue, model)
    return record, queue, task_message(svc.celery, payload, queue)


async def submit_batch(
    svc: Services, body: BatchCreate, batch_url: str, job_url: str, owner: str | None = None
) -> tuple[BatchRecord, list[JobRecord]]:
    """Store and enqueue the batch; returns it and its jobs (all queued). ``batch_url`` and
    ``job_url`` are the batch's and a job's URL with ``{id}`` to fill in. ``owner``: the caller's
    key name, owner of the batch and each job (api.submit.submit_job says what that means). 422
    when it is too large or a webhook is refused, 429 when the queue lacks room for all of it or
    the key would have more active jobs than it may."""
    _check_size(svc, len(body.items))
    output_options.check_items(body.items, svc.settings)
    models = await _models(svc, body)
    structured = {m: item for item, m in zip(body.items, models, strict=True) if item.structure()}
    for model, item in structured.items():
        await output_options.check_engines(svc, item, model)
    _check_fits(svc, models)
    await _check_webhooks(svc, body)
    batch_id = new_job_id()
    now = time.time()
    jobs = [
        _job(svc, body, i, models[i], batch_id, now, job_url, owner) for i in range(len(body.items))
    ]
    batch = BatchRecord(
        id=batch_id,
        created_at=now,
        total=len(jobs),
        jobs=[record.id for record, _, _ in jobs],
        metadata=body.metadata,
        webhook=body.webhook,
        url=batch_url.format(id=batch_id),
        job_url=job_url,
        owner=owner,
    )
    max_active = svc.access.max_active_jobs(owner) if owner is not None else 2**62
    try:
        await svc.batches.create(batch, jobs, svc.settings.max_queued, max_active)
    except QueueFull as full:
        needed = sum(1 for m in models if m == full.model)
        raise await overloaded(svc.store, svc.settings, full, needed) from None
    except OwnerBusy as busy:
        raise owner_busy(owner, busy.active, len(jobs)) from None
    metrics.JOBS_SUBMITTED.inc(len(jobs))
    return batch, [record for record, _, _ in jobs]
