"""Job records in Redis, shared by the API (which creates and reads them) and the workers (which
move them through their states).

One hash per job, ``genq:job:<id>``: ``status``, ``created_at``, ``started_at``, ``completed_at``,
``worker``, ``webhook``, ``url`` and ``batch_id`` (a job of a batch) as plain strings; ``input``,
``output``, ``error``, ``metrics`` and ``webhook_events_filter`` as JSON. Its webhook attempts are a
list beside it, ``genq:job:<id>:deliveries`` (one JSON object each), read with the hash when it has
a webhook. Every status change is one Lua script, so it is atomic and checked: a job moves only from
the states the caller names (a canceled job is never started; a finished job is never finished
twice), and reaching a terminal state publishes the job id and the record on ``genq:jobs:done`` in
the same step (a waiting API process answers from the message, without reading the record back),
and, when the job's webhook wants ``completed``, schedules that delivery (genq.contract.webhooks) in
the same step. The same scripts keep ``genq:jobs:queued``, the number of jobs waiting to start,
exact (and each model's own, ``genq:jobs:queued:<model>``, for a job whose ``model`` field names
it), and mark the job's output stream (genq.store.streams): a ``start`` entry when a worker claims
it, an ``end`` entry when it ends, so a stream reader learns both in order with the text between
them. A job made with an API key names it in ``owner``; creating it checks and adds to that key's
set of active jobs (``genq:owner:<name>:active``) in the same step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from genq.contract.constants import (
    JOB_DONE_CHANNEL,
    LAPSED_SET,
    LEASES_SET,
    QUEUED_COUNT,
    WEBHOOK_SCHEDULE,
    deliveries_key,
    job_key,
    model_queued_key,
    owner_active_key,
    stream_key,
)
from genq.contract.schemas import JobOutput, JobRecord, JobStatus
from genq.contract.webhooks import Delivery, completed_delivery
from genq.store import scripts, streams
from genq.store.coalesce import CoalescedScript

_JSON_FIELDS = ("input", "output", "error", "metrics", "webhook_events_filter")
_FLOAT_FIELDS = ("created_at", "started_at", "completed_at")
_INT_FIELDS = ("attempts", "resumed_at_token")


def queued_counter(model: str | None) -> str:
    """The counter a job's waiting is checked against: its model's; all jobs' for none (a job
    made by code older than models, or a test's)."""
    return QUEUED_COUNT if model is None else model_queued_key(model)


def _encode(fields: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if name in _JSON_FIELDS:
            out[name] = (
                value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            )
        elif isinstance(value, JobStatus):
            out[name] = value.value
        else:
            out[name] = str(value)
    return out


def encode_record(record: JobRecord) -> list[str]:
    """A new job's hash as field/value pairs (its deliveries list is kept apart)."""
    pairs: list[str] = []
    fields = record.model_dump(mode="json", exclude={"webhook_deliveries"})
    for name, value in _encode(fields).items():
        pairs += [name, value]
    return pairs


def decode_done_message(data: str) -> tuple[str, dict[str, str] | None]:
    """A ``genq:jobs:done`` message -> the job id and its hash as the terminal transition left
    it (None from a publisher that sent the id alone)."""
    job_id, _, rest = data.partition(" ")
    if not rest:
        return job_id, None
    flat = json.loads(rest)
    return job_id, dict(zip(flat[::2], flat[1::2], strict=True))


def decode_record(raw: Mapping[str, str], deliveries: Iterable[str] = ()) -> JobRecord:
    """A job hash (and its deliveries list) as read from Redis -> the record."""
    data = _decode(raw)
    data["webhook_deliveries"] = [json.loads(d) for d in deliveries]
    return JobRecord.model_validate(data)


def _decode(raw: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _JSON_FIELDS:
            data[name] = json.loads(value)
        elif name in _FLOAT_FIELDS:
            data[name] = float(value)
        elif name in _INT_FIELDS:
            data[name] = int(value)
        else:
            data[name] = value
    return data


class QueueFull(Exception):
    """As many jobs as allowed are already waiting (for the job's model)."""

    def __init__(self, waiting: int, model: str | None = None):
        super().__init__(f"{waiting} jobs are waiting")
        self.waiting = waiting
        self.model = model


class OwnerBusy(Exception):
    """The job's owner (an API key) already has as many active jobs as it may."""

    def __init__(self, active: int):
        super().__init__(f"{active} jobs are queued or processing")
        self.active = active


class TransitionRefused(Exception):
    """The job was not in a state the change may start from (or does not exist)."""

    def __init__(self, job_id: str, current: str | None):
        super().__init__(f"job {job_id} is {current or 'unknown'}")
        self.job_id = job_id
        self.current = JobStatus(current) if current else None


class JobStore:
    """Async access to job records; the client must use ``decode_responses=True``."""

    def __init__(self, redis: Redis, ttl_s: int, stream_keep_s: int = 60):
        self.redis = redis
        self.ttl_s = ttl_s
        # A finished job's output stream is kept this long (readers following it get its end),
        # not as long as the job: its text is in the hash, and the stream is most of what a job
        # costs in Redis.
        self.stream_keep_s = min(stream_keep_s, ttl_s)
        self._transition = redis.register_script(scripts.TRANSITION)
        # A burst of creates goes out in a few pipelines (genq.store.coalesce), not a call each.
        self._create = CoalescedScript(redis, scripts.CREATE_JOB)
        self._claim = redis.register_script(scripts.CLAIM)
        self._lapsed = redis.register_script(scripts.LAPSED)
        self._renew = redis.register_script(scripts.RENEW_LEASES)
        self._recount = redis.register_script(scripts.RECOUNT_WAITING)

    async def create(
        self,
        record: JobRecord,
        idempotency: tuple[str, str] | None = None,
        max_queued: int = 2**62,
        message: tuple[str, str] | None = None,
        max_active: int = 2**62,
    ) -> str | None:
        """Store a new queued job, in one atomic step with its checks and, with
        ``message=(queue list, message)``, with its message pushed on the queue: one round trip,
        and never a record without its message nor a message without its record. With
        ``idempotency=(key, value)``, only if that key is free: returns the key's existing value
        instead. Raises :class:`QueueFull` when ``max_queued`` jobs of the record's model already
        wait (of all jobs without a model, for a record without one), and, for a
        record with an ``owner``, :class:`OwnerBusy` when it has ``max_active`` jobs queued or
        processing."""
        pairs = encode_record(record)
        key, value = idempotency or ("", "")
        queue, body = message or ("", "")
        active = owner_active_key(record.owner) if record.owner is not None else ""
        with scripts.full_is_out_of_memory():
            outcome, detail = await self._create(
                keys=[
                    job_key(record.id),
                    key,
                    queued_counter(record.model),
                    queue,
                    active,
                    QUEUED_COUNT,
                ],
                args=[self.ttl_s, value, max_queued, body, max_active, *pairs],
            )
        if outcome == "full":
            raise QueueFull(int(detail), record.model)
        if outcome == "busy":
            raise OwnerBusy(int(detail))
        return detail if outcome == "exists" else None

    async def queued_counts(self, models: Sequence[str] = ()) -> tuple[int, list[int]]:
        """Jobs waiting to start, of all models and of each of ``models``, in one round trip."""
        total, *each = await self.redis.mget([QUEUED_COUNT, *map(model_queued_key, models)])
        return int(total or 0), [int(n or 0) for n in each]

    async def recount_waiting(self, models: Sequence[str] = ()) -> tuple[int, list[int]]:
        """The janitor's step: the waiting counters of all models and of ``models`` recounted
        from the jobs really waiting (a job whose record expired while it waited leaves them);
        returns the counts."""
        total, *each = await self._recount(
            keys=[QUEUED_COUNT, *map(model_queued_key, models)], args=[]
        )
        return int(total), [int(n) for n in each]

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.hgetall(job_key(job_id))
        if not raw:
            return None
        deliveries = (
            await self.redis.lrange(deliveries_key(job_id), 0, -1) if "webhook" in raw else []
        )
        record = decode_record(raw, deliveries)
        if record.status is JobStatus.PROCESSING:
            # The output so far, from its stream (the record holds the output once it ends).
            entries = await self.redis.xrange(stream_key(job_id))
            if (so_far := streams.partial(fields for _, fields in entries)) is not None:
                record.output = JobOutput(text=so_far[0])
                record.metrics.output_tokens = so_far[1]
        return record

    async def run_so_far(self, job_id: str) -> streams.RunSoFar:
        """The output of the job's current run as its stream has it (what a resumed run goes on
        from)."""
        entries = await self.redis.xrange(stream_key(job_id))
        return streams.run_so_far(fields for _, fields in entries)

    async def transition(
        self,
        job_id: str,
        allowed_from: Iterable[JobStatus],
        to: JobStatus,
        fields: Mapping[str, Any] | None = None,
        owner: str | None = None,
        last_output: streams.Output | None = None,
    ) -> JobStatus:
        """Move the job to ``to`` and set ``fields``, atomically, if it is in ``allowed_from``
        (and, with ``owner``, still held by that worker). Returns the status it had; raises
        :class:`TransitionRefused` otherwise. ``last_output``: the job's last text delta, added
        to its output stream in the same step, before the stream's end (one round trip where a
        flush and then the transition took two)."""
        with scripts.full_is_out_of_memory():
            applied, current = await self._transition(
                **self._transition_call(job_id, allowed_from, to, fields, owner, last_output)
            )
        if not int(applied):
            raise TransitionRefused(job_id, current or None)
        return JobStatus(current)

    async def transition_many(
        self,
        job_ids: Iterable[str],
        allowed_from: Iterable[JobStatus],
        to: JobStatus,
        fields: Mapping[str, Any] | None = None,
    ) -> list[tuple[bool, JobStatus | None]]:
        """:meth:`transition` for many jobs in one round trip (each job its own atomic step).
        Returns, per job, whether it moved and the status it had (None: no such job)."""
        allowed = list(allowed_from)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                await self._transition(
                    **self._transition_call(job_id, allowed, to, fields, None), client=pipe
                )
            with scripts.full_is_out_of_memory():
                results = await pipe.execute()
        return [(bool(int(ok)), JobStatus(status) if status else None) for ok, status in results]

    def _transition_call(
        self,
        job_id: str,
        allowed_from: Iterable[JobStatus],
        to: JobStatus,
        fields: Mapping[str, Any] | None,
        owner: str | None,
        last_output: streams.Output | None = None,
    ) -> dict[str, list[Any]]:
        pairs: list[str] = []
        for name, value in _encode(fields or {}).items():
            pairs += [name, value]
        terminal = to.is_terminal()
        return {
            "keys": [
                job_key(job_id),
                QUEUED_COUNT,
                LEASES_SET,
                LAPSED_SET,
                WEBHOOK_SCHEDULE,
                stream_key(job_id),
            ],
            "args": [
                " ".join(s.value for s in allowed_from),
                to.value,
                JOB_DONE_CHANNEL if terminal else "",
                job_id,
                str(self.ttl_s) if terminal else "",
                owner or "",
                completed_delivery(job_id).encode() if terminal else "",
                repr(time.time()),
                *(
                    ("", "", "")
                    if last_output is None
                    else (last_output.index, last_output.text, last_output.output_tokens)
                ),
                self.stream_keep_s,
                *pairs,
            ],
        }

    async def schedule_webhook(self, delivery: Delivery, at: float | None = None) -> None:
        """Send ``delivery`` at ``at`` (now by default): the webhooks process picks it up."""
        await self.redis.zadd(
            WEBHOOK_SCHEDULE, {delivery.encode(): time.time() if at is None else at}
        )

    async def claim(
        self, job_id: str, worker: str, started_at: float, lease_s: float, resumed_at: int = 0
    ) -> int:
        """Take a job to run: returns how many times it has been started, this time included.
        ``resumed_at``: the output tokens of the run before that this one keeps (its stream's
        ``start`` entry and the record's ``resumed_at_token`` say so). Raises
        :class:`TransitionRefused` if it is not queued, nor processing with a lapsed lease."""
        with scripts.full_is_out_of_memory():
            claimed, value = await self._claim(
                keys=[
                    job_key(job_id),
                    QUEUED_COUNT,
                    LEASES_SET,
                    LAPSED_SET,
                    stream_key(job_id),
                ],
                args=[worker, started_at, int(lease_s * 1000), job_id, self.ttl_s, resumed_at],
            )
        if not int(claimed):
            raise TransitionRefused(job_id, value or None)
        return int(value)

    async def renew_leases(self, job_ids: Iterable[str], lease_s: float) -> None:
        """A live worker's heartbeat: its running jobs' leases end ``lease_s`` from now."""
        if job_ids := list(job_ids):
            await self._renew(keys=[LEASES_SET], args=[int(lease_s * 1000), *job_ids])

    async def release_leases(self, job_ids: Iterable[str]) -> None:
        """Give running jobs back now, rather than when their leases end: the next janitor sends
        them again."""
        if job_ids := list(job_ids):
            await self.redis.zadd(LEASES_SET, dict.fromkeys(job_ids, 0), xx=True)

    async def lapsed_jobs(self, resend_after_s: int, limit: int = 1000) -> list[str]:
        """Processing jobs whose worker died (their lease ended), at most ``limit``, each
        returned once per ``resend_after_s`` until a worker claims it."""
        return list(await self._lapsed(keys=[LEASES_SET, LAPSED_SET], args=[resend_after_s, limit]))
