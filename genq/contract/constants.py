"""Every Redis key, channel, queue and task name genq uses, in one place."""

from __future__ import annotations

KEY_PREFIX = "genq:"

# One Redis hash per job: ``genq:job:<id>`` (fields described in genq.store.jobs).
JOB_KEY = KEY_PREFIX + "job:{job_id}"
# Pub/sub channel on which the job id is published whenever a job reaches a terminal status.
JOB_DONE_CHANNEL = KEY_PREFIX + "jobs:done"

# Jobs accepted and not yet started (or canceled), all models together, and per model: what
# GENQ_MAX_QUEUED bounds (each model's own, so that a burst on one cannot refuse another's jobs).
QUEUED_COUNT = KEY_PREFIX + "jobs:queued"
MODEL_QUEUED_PREFIX = KEY_PREFIX + "jobs:queued:"
MODEL_QUEUED_COUNT = MODEL_QUEUED_PREFIX + "{model}"
# Beside each counter, the jobs it counts: a sorted set of job ids scored by when each job's
# record expires (genq/store/lua/waiting.lua), from which the counter is recounted.
WAITING_SET = KEY_PREFIX + "jobs:waiting"
MODEL_WAITING_PREFIX = KEY_PREFIX + "jobs:waiting:"
# The models workers serve (genq.contract.models): a hash, model name -> when a worker of it last
# said so (unix seconds), written by every worker from its start and by its heartbeat.
MODELS_KEY = KEY_PREFIX + "models"
# Pub/sub channel for cancel requests of running jobs: {"id": ..., "reason": ...}.
CANCEL_CHANNEL = KEY_PREFIX + "jobs:cancel"
# Idempotency-Key -> {"id": job id, "hash": request hash}, kept as long as the job.
IDEMPOTENCY_KEY = KEY_PREFIX + "idem:{key}"
# The same for a caller with an API key: each key has its own Idempotency-Keys (names hold no ":").
OWNER_IDEMPOTENCY_KEY = KEY_PREFIX + "idem-of:{owner}:{key}"

# Per API key (api.auth): its request-rate limiter (GCRA: when its next request is due, in ms),
# and a set of its jobs' keys that may still be queued or processing (genq.store.jobs prunes it).
RATE_LIMIT_KEY = KEY_PREFIX + "ratelimit:{owner}"
OWNER_ACTIVE_KEY = KEY_PREFIX + "owner:{owner}:active"

# Jobs in "processing", by when their lease ends (unix ms, Redis's clock): a live worker's
# heartbeat pushes its jobs' ends forward. A job whose lease ended lost its worker: a janitor
# moves it to LAPSED_SET, by when to send it again if no worker has claimed it by then, and sends
# it. Both sorted sets are read from their low end only, so a janitor's work is O(lapsed jobs).
LEASES_SET = KEY_PREFIX + "jobs:leases"
LAPSED_SET = KEY_PREFIX + "jobs:lapsed"

# Live workers: a set of names, and one short-lived key per worker refreshed by its heartbeat.
WORKERS_SET = KEY_PREFIX + "workers"
WORKER_KEY = KEY_PREFIX + "worker:{name}"

# A job's output as it is generated: a Redis stream beside its hash, kept as long as the job.
# Entries: ``e=start a=<attempt>`` when a worker starts it (genq.store.jobs's claim), ``e=out
# i=<index> t=<text delta> n=<output tokens so far>`` as it generates (worker.host.streams), ``e=end
# s=<status>`` when it ends (genq.store.jobs's terminal transition). Read by ``GET
# /v1/jobs/{id}/stream``.
STREAM_KEY = KEY_PREFIX + "job:{job_id}:stream"

# Webhook attempts of a job, oldest first: one JSON object per attempt, kept as long as the job.
DELIVERIES_KEY = KEY_PREFIX + "job:{job_id}:deliveries"
# Webhook deliveries waiting to be sent: a sorted set, score = when (unix seconds), member = the
# delivery as JSON. The webhooks process moves due members onto WEBHOOK_QUEUE
# (genq.contract.webhooks).
WEBHOOK_SCHEDULE = KEY_PREFIX + "webhooks:scheduled"

# One Redis hash per batch, ``genq:batch:<id>`` (fields described in genq.store.batches), and its
# webhook attempts beside it, as a job's. A job of a batch names it in its ``batch_id`` field.
BATCH_KEY_PREFIX = KEY_PREFIX + "batch:"
BATCH_KEY = BATCH_KEY_PREFIX + "{batch_id}"
BATCH_DELIVERIES_KEY = BATCH_KEY + ":deliveries"

# Celery routing. Each model has its own queue, ``<GENQ_QUEUE>.<model name>``
# (:func:`model_queue`), consumed by its own workers.
DEFAULT_QUEUE = "genq.generate"
TASK_GENERATE = "genq.generate"
WEBHOOK_QUEUE = "genq.webhooks"
TASK_WEBHOOK = "genq.webhook"


def job_key(job_id: str) -> str:
    return JOB_KEY.format(job_id=job_id)


def model_queue(prefix: str, model: str) -> str:
    """The queue of ``model``'s jobs: ``genq.generate.smollm2-135m-instruct``."""
    return f"{prefix}.{model}"


def model_queued_key(model: str) -> str:
    return MODEL_QUEUED_COUNT.format(model=model)


def worker_key(name: str) -> str:
    return WORKER_KEY.format(name=name)


def idempotency_key(key: str, owner: str | None = None) -> str:
    if owner is None:
        return IDEMPOTENCY_KEY.format(key=key)
    return OWNER_IDEMPOTENCY_KEY.format(owner=owner, key=key)


def rate_limit_key(owner: str) -> str:
    return RATE_LIMIT_KEY.format(owner=owner)


def owner_active_key(owner: str) -> str:
    return OWNER_ACTIVE_KEY.format(owner=owner)


def deliveries_key(job_id: str) -> str:
    return DELIVERIES_KEY.format(job_id=job_id)


def stream_key(job_id: str) -> str:
    return STREAM_KEY.format(job_id=job_id)


def batch_key(batch_id: str) -> str:
    return BATCH_KEY.format(batch_id=batch_id)


def batch_deliveries_key(batch_id: str) -> str:
    return BATCH_DELIVERIES_KEY.format(batch_id=batch_id)
