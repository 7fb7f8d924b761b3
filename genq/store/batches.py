"""Batch records in Redis (the batch contract is genq.contract.batches).

One hash per batch, ``genq:batch:<id>``: ``id``, ``created_at``, ``completed_at``, ``total``,
``pending`` (its jobs not yet terminal), ``url``, ``job_url``, ``webhook`` and ``delivery`` (its
``completed`` webhook delivery, encoded, when it has a webhook) as plain strings; ``jobs`` (ids in
item order) and ``metadata`` as JSON. Its webhook attempts are a list beside it,
``genq:batch:<id>:deliveries``, as a job's are.

- Created whole or not at all: one Lua step checks that the queue has room for every job, then
  writes the batch, every job record (each naming it in ``batch_id``) and every queue message.
- Completed exactly once: the job store's transition script (genq.store.jobs), in the step that ends
  a job of the batch, counts ``pending`` down; the step that reaches 0 sets ``completed_at`` and
  schedules the batch's webhook. Jobs ending at once on several workers are serialized by Redis.
- Counts by status are read when the batch is read (one pipelined ``HGET status`` per job), not
  kept up to date in Lua: the batch object lists every job's status anyway, so the counts cost
  nothing more, they cannot drift from the jobs' own records, and the claim script (queued ->
  processing) needs no batch step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.asyncio import Redis

from genq.contract.batches import BatchRecord
from genq.contract.constants import (
    QUEUED_COUNT,
    batch_deliveries_key,
    batch_key,
    job_key,
    owner_active_key,
)
from genq.contract.schemas import JobRecord, JobStatus
from genq.contract.webhooks import batch_completed_delivery
from genq.store import scripts
from genq.store.jobs import OwnerBusy, QueueFull, encode_record, queued_counter


def _batch_pairs(batch: BatchRecord) -> list[str]:
    fields: dict[str, str] = {
        "id": batch.id,
        "created_at": repr(batch.created_at),
        "total": str(batch.total),
        "pending": str(batch.total),
        "jobs": json.dumps(batch.jobs, separators=(",", ":")),
        "url": batch.url,
        "job_url": batch.job_url,
    }
    if batch.owner is not None:
        fields["owner"] = batch.owner
    if batch.metadata is not None:
        fields["metadata"] = json.dumps(batch.metadata, separators=(",", ":"))
    if batch.webhook is not None:
        fields["webhook"] = batch.webhook
        fields["delivery"] = batch_completed_delivery(batch.id).encode()
    return [item for pair in fields.items() for item in pair]


def decode_batch(raw: Mapping[str, str], deliveries: Sequence[str] = ()) -> BatchRecord:
    """A batch hash (and its deliveries list) as read from Redis -> the record."""
    data: dict[str, Any] = {
        k: raw[k] for k in ("id", "url", "job_url", "webhook", "owner") if k in raw
    }
    data["created_at"] = float(raw["created_at"])
    if "completed_at" in raw:
        data["completed_at"] = float(raw["completed_at"])
    data["total"] = int(raw["total"])
    data["jobs"] = json.loads(raw["jobs"])
    data["metadata"] = json.loads(raw["metadata"]) if "metadata" in raw else None
    data["webhook_deliveries"] = [json.loads(d) for d in deliveries]
    return BatchRecord.model_validate(data)


def _statuses(values: Sequence[str | None]) -> list[JobStatus | None]:
    return [None if v is None else JobStatus(v) for v in values]


class BatchStore:
    """Async access to batch records; the client must use ``decode_responses=True``."""

    def __init__(self, redis: Redis, ttl_s: int):
        self.redis = redis
        self.ttl_s = ttl_s
        self._create = redis.register_script(scripts.CREATE_BATCH)

    async def create(
        self,
        batch: BatchRecord,
        jobs: Sequence[tuple[JobRecord, str, str]],
        max_queued: int,
        max_active: int = 2**62,
    ) -> None:
        """Store the batch and its ``jobs`` (each record with its queue and its message) and push
        the messages on their queues, in one atomic step: all of it, or, raising
        :class:`QueueFull` when a model has fewer places left under ``max_queued`` than the
        batch has jobs of it (or
        :class:`OwnerBusy` when the batch's owner would have more than ``max_active`` jobs
        queued or processing), none of it."""
        owner = owner_active_key(batch.owner) if batch.owner is not None else ""
        args: list[Any] = [self.ttl_s, max_queued, len(jobs), owner, max_active]
        pairs = _batch_pairs(batch)
        args += [len(pairs), *pairs]
        keys = [batch_key(batch.id), QUEUED_COUNT]
        models: dict[str, str | None] = {}
        for record, queue, message in jobs:
            pairs = encode_record(record)
            args += [message, len(pairs), *pairs]
            counter = queued_counter(record.model)
            models[counter] = record.model
            keys += [job_key(record.id), queue, counter]
        with scripts.full_is_out_of_memory():
            outcome, detail, counter = await self._create(keys=keys, args=args)
        if outcome == "full":
            raise QueueFull(int(detail), models[counter])
        if outcome == "busy":
            raise OwnerBusy(int(detail))

    async def get(self, batch_id: str) -> tuple[BatchRecord, list[JobStatus | None]] | None:
        """The batch and each of its jobs' status (None for one that expired)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(batch_key(batch_id))
            pipe.lrange(batch_deliveries_key(batch_id), 0, -1)
            raw, deliveries = await pipe.execute()
        if not raw:
            return None
        record = decode_batch(raw, deliveries)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in record.jobs:
                pipe.hget(job_key(job_id), "status")
            return record, _statuses(await pipe.execute())


def read_batch(
    client: redis.Redis, batch_id: str
) -> tuple[BatchRecord, list[JobStatus | None]] | None:
    """:meth:`BatchStore.get` for a synchronous client (the webhooks process)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(batch_key(batch_id))
        pipe.lrange(batch_deliveries_key(batch_id), 0, -1)
        raw, deliveries = pipe.execute()
    if not raw:
        return None
    record = decode_batch(raw, deliveries)
    with client.pipeline(transaction=False) as pipe:
        for job_id in record.jobs:
            pipe.hget(job_key(job_id), "status")
        return record, _statuses(pipe.execute())
