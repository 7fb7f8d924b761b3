"""Job records in Redis, shared by the API (which creates and reads them) and the workers (which
move them through their states).

One hash per job, ``genq:job:<id>``: ``status``, ``created_at``, ``started_at``, ``completed_at``,
``worker``, ``webhook``, ``url`` and ``batch_id`` (a job of a batch) as plain strings; ``input``,
``output``, ``error``, ``metrics`` and ``webhook_events_filter`` as JSON. Its webhook attempts are a list beside it,
``genq:job:<id>:deliveries`` (one JSON object each), read with the hash when it has a webhook.
Every status change is one Lua script, so it is atomic and checked: a job moves only from the
states the caller names (a canceled job is never started; a finished job is never finished twice),
and reaching a terminal state publishes the job id and the record on ``genq:jobs:done`` in the
same step (a waiting API process answers from the message, without reading the record back), and, when
the job's webhook wants ``completed``, schedules that delivery (genq.contract.webhooks) in the same step.
The same scripts keep ``genq:jobs:queued``, the number of jobs waiting to start, exact (and each
model's own, ``genq:jobs:queued:<model>``, for a job whose ``model`` field names it), and mark
the job's output stream (genq.store.streams): a ``start`` entry when a worker claims it, an ``end``
entry when it ends, so a stream reader learns both in order with the text between them. A job
made with an API key names it in ``owner``; creating it checks and adds to that key's set of
active jobs (``genq:owner:<name>:active``) in the same step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from redis.asyncio import Redis

from genq.contract.constants import (
    BATCH_KEY_PREFIX,
    JOB_DONE_CHANNEL,
    KEY_PREFIX,
    MODEL_QUEUED_PREFIX,
    PROCESSING_SET,
    QUEUED_COUNT,
    WEBHOOK_SCHEDULE,
    deliveries_key,
    job_key,
    lease_key,
    model_queued_key,
    owner_active_key,
    stream_key,
)
from genq.contract.schemas import JobOutput, JobRecord, JobStatus
from genq.contract.webhooks import Delivery, completed_delivery
from genq.store import streams
from genq.store.coalesce import CoalescedScript

_JSON_FIELDS = ("input", "output", "error", "metrics", "webhook_events_filter")
_FLOAT_FIELDS = ("created_at", "started_at", "completed_at")
_INT_FIELDS = ("attempts",)

# KEYS[1] the job hash, KEYS[2] the idempotency key ('' for none), KEYS[3] the job's model's
# queued counter (checked against the limit), KEYS[4] the queue's Redis list ('' to enqueue
# nothing), KEYS[5] the owner's set of active job keys ('' for no owner), KEYS[6] the queued
# counter of all models. ARGV: TTL seconds, idempotency value, the most jobs that may wait, the
# job's queue message, the most active jobs the owner may have, then the record's field/value
# pairs. Nothing is written when it returns {'exists', the key's value} (the key is taken),
# {'full', jobs waiting} or {'busy', the owner's active jobs}; else {'created', ''}, with the
# record and its message both written.
# The owner's set is pruned (members whose job ended or expired) only when it looks full, so a
# create costs O(1) amortized; a key really at its limit pays O(limit) per refused try, which its
# request rate bounds. Members are job keys, read by name as _LAPSED reads its keys.
_CREATE = """
if KEYS[2] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return {'exists', existing} end
end
local waiting = tonumber(redis.call('GET', KEYS[3]) or '0')
if waiting >= tonumber(ARGV[3]) then return {'full', tostring(waiting)} end
if KEYS[5] ~= '' and redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[5]) then
  for _, job in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    local status = redis.call('HGET', job, 'status')
    if status ~= 'queued' and status ~= 'processing' then redis.call('SREM', KEYS[5], job) end
  end
  local active = redis.call('SCARD', KEYS[5])
  if active >= tonumber(ARGV[5]) then return {'busy', tostring(active)} end
end
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[3])
if KEYS[6] ~= KEYS[3] then redis.call('INCR', KEYS[6]) end
if KEYS[4] ~= '' then redis.call('LPUSH', KEYS[4], ARGV[4]) end
if KEYS[5] ~= '' then
  redis.call('SADD', KEYS[5], KEYS[1])
  redis.call('EXPIRE', KEYS[5], ARGV[1])
end
return {'created', ''}
"""

# A queued job that leaves the queue (started, or ended unrun) leaves the waiting counts: all
# models' (KEYS[2]) and its own model's, named by its hash (KEYS[1]). Shared by _TRANSITION and
# _CLAIM.
_LEAVE_QUEUE = f"""redis.call('DECR', KEYS[2])
  local model = redis.call('HGET', KEYS[1], 'model')
  if model then redis.call('DECR', '{MODEL_QUEUED_PREFIX}' .. model) end"""

# KEYS: the job hash, the queued counter, the processing set, the job's lease, the webhook
# schedule, the job's output stream. ARGV: allowed current statuses (space separated), new
# status, channel to publish the job id on ('' for none), job id, TTL seconds ('' to keep), the
# worker that must own the job ('' for any), the ``completed`` delivery to schedule if the job's
# webhook wants it ('' for none), the time to schedule it at, the job's last ``output`` stream
# entry as index ('' for none), text and output tokens (worker.host.streams: written in this step,
# just before the stream's end), then field/value pairs. The message published is the job id, a
# space, and the hash after the change as a JSON array of fields and values. Returns
# {1, previous status} when applied, {0, current status} when refused ('' if no such job). A job of a batch (field batch_id) that ends counts its batch down; the
# batch's last job completes it, in this same step, so exactly once (genq.store.batches).
_TRANSITION = (
    """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {0, ''} end
local allowed = false
for s in string.gmatch(ARGV[1], '%S+') do
  if s == current then allowed = true end
end
if not allowed then return {0, current} end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'worker') ~= ARGV[6] then return {0, current} end
if current == 'queued' then
  $LEAVE_QUEUE
end
if current == 'processing' and ARGV[2] ~= 'processing' then
  redis.call('SREM', KEYS[3], ARGV[4])
  redis.call('DEL', KEYS[4])
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], unpack(ARGV, 12))
if ARGV[9] ~= '' then
  $LAST_OUTPUT
end
if ARGV[5] ~= '' then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('XADD', KEYS[6], '*', 'e', 'end', 's', ARGV[2])
  redis.call('EXPIRE', KEYS[6], ARGV[5])
end
if ARGV[7] ~= '' then
  local events = redis.call('HGET', KEYS[1], 'webhook_events_filter')
  if events and string.find(events, '"completed"', 1, true) then
    redis.call('ZADD', KEYS[5], ARGV[8], ARGV[7])
  end
end
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. cjson.encode(redis.call('HGETALL', KEYS[1])))
end
-- batch: the last job of a batch to end sets its completed_at and schedules its webhook
local batch = ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'batch_id')
local bkey = batch and '$BATCH_KEY_PREFIX' .. batch
if bkey and redis.call('EXISTS', bkey) == 1 and redis.call('HINCRBY', bkey, 'pending', -1) == 0 then
  redis.call('HSET', bkey, 'completed_at', ARGV[8])
  redis.call('EXPIRE', bkey, ARGV[5])
  local delivery = redis.call('HGET', bkey, 'delivery')
  if delivery then redis.call('ZADD', KEYS[5], ARGV[8], delivery) end
end
return {1, current}
""".replace("$BATCH_KEY_PREFIX", BATCH_KEY_PREFIX)
    .replace("$LEAVE_QUEUE", _LEAVE_QUEUE)
    .replace("$LAST_OUTPUT", streams.xadd_output_lua("KEYS[6]", "ARGV[9]", "ARGV[10]", "ARGV[11]"))
)

# Claim a job for a worker: from "queued", or from "processing" whose lease lapsed (its worker
# died). KEYS: the job hash, the queued counter, the processing set, the job's lease, the job's
# output stream. ARGV: worker, started_at, lease milliseconds, job id, TTL seconds.
# Returns {1, attempts} when claimed, {0, current status} when not.
_CLAIM = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {0, ''} end
if current == 'processing' then
  if redis.call('EXISTS', KEYS[4]) == 1 then return {0, current} end
elseif current == 'queued' then
  $LEAVE_QUEUE
else
  return {0, current}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'processing', 'worker', ARGV[1], 'started_at', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[3])
redis.call('XADD', KEYS[5], '*', 'e', 'start', 'a', attempts)
redis.call('EXPIRE', KEYS[5], ARGV[5])
return {1, attempts}
""".replace("$LEAVE_QUEUE", _LEAVE_QUEUE)

# Processing jobs whose lease lapsed and that no janitor resent lately. KEYS: the processing set.
# ARGV: the key prefix, seconds before the same job may be resent again.
_LAPSED = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. 'lease:' .. id) == 0 then
    if redis.call('HGET', ARGV[1] .. 'job:' .. id, 'status') ~= 'processing' then
      redis.call('SREM', KEYS[1], id)
    elseif redis.call('SET', ARGV[1] .. 'requeued:' .. id, '1', 'NX', 'EX', ARGV[2]) then
      table.insert(out, id)
    end
  end
end
return out
"""


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

    def __init__(self, redis: Redis, ttl_s: int):
        self.redis = redis
        self.ttl_s = ttl_s
        self._transition = redis.register_script(_TRANSITION)
        # A burst of creates goes out in a few pipelines (genq.store.coalesce), not a call each.
        self._create = CoalescedScript(redis, _CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._lapsed = redis.register_script(_LAPSED)

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

    async def queued_count(self, model: str | None = None) -> int:
        """Jobs waiting to start: of ``model``, or of all models."""
        key = QUEUED_COUNT if model is None else model_queued_key(model)
        return int(await self.redis.get(key) or 0)

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
                PROCESSING_SET,
                lease_key(job_id),
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
                *pairs,
            ],
        }

    async def schedule_webhook(self, delivery: Delivery, at: float | None = None) -> None:
        """Send ``delivery`` at ``at`` (now by default): the webhooks process picks it up."""
        await self.redis.zadd(
            WEBHOOK_SCHEDULE, {delivery.encode(): time.time() if at is None else at}
        )

    async def claim(self, job_id: str, worker: str, started_at: float, lease_s: float) -> int:
        """Take a job to run: returns how many times it has been started, this time included.
        Raises :class:`TransitionRefused` if it is not queued, nor processing with a lapsed lease."""
        claimed, value = await self._claim(
            keys=[
                job_key(job_id),
                QUEUED_COUNT,
                PROCESSING_SET,
                lease_key(job_id),
                stream_key(job_id),
            ],
            args=[worker, started_at, int(lease_s * 1000), job_id, self.ttl_s],
        )
        if not int(claimed):
            raise TransitionRefused(job_id, value or None)
        return int(value)

    async def renew_leases(self, job_ids: Iterable[str], worker: str, lease_s: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.set(lease_key(job_id), worker, px=int(lease_s * 1000))
            await pipe.execute()

    async def release_leases(self, job_ids: Iterable[str]) -> None:
        """Give running jobs back now, rather than when their leases lapse."""
        if job_ids := list(job_ids):
            await self.redis.delete(*(lease_key(job_id) for job_id in job_ids))

    async def lapsed_jobs(self, resend_after_s: int) -> list[str]:
        """Processing jobs whose worker died (their lease lapsed), each returned once per
        ``resend_after_s``."""
        return list(await self._lapsed(keys=[PROCESSING_SET], args=[KEY_PREFIX, resend_after_s]))
