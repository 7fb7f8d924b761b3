"""The worker's Celery app: shared config, the warm threads pool, the task, the lifecycle signals.

Start it with ``genq worker`` (which calls :func:`main`). This process consumes the queue and
forwards each job to the engine host, the process it starts to run them (worker.host.process).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Celery, Task, signals
from celery.worker.request import Request

from genq.contract.constants import TASK_GENERATE, model_queue
from genq.contract.schemas import JobPayload
from genq.contract.settings import WorkerSettings, worker_settings
from genq.store.models import register
from genq.store.queue import RETRY_ON_REDIS_ERRORS, make_celery, run_worker, send_job
from genq.store.redis_client import sync_redis
from worker.health import WorkerHealth
from worker.host import process as engine_host

log = logging.getLogger(__name__)

settings: WorkerSettings = worker_settings()
app: Celery = make_celery(settings, "genq-worker")
app.conf.update(
    worker_pool="worker.pool:WarmThreadPool",
    # Task events to Redis in batches, not one publish each (worker.consumer).
    worker_consumer="worker.consumer:BatchedEventsConsumer",
    worker_concurrency=settings.worker_concurrency,
)
NAME = settings.worker_name or f"genq-{os.getpid()}@{socket.gethostname()}"
health = WorkerHealth()


# A job sent back to the queue on a Redis outage is safe to run again: it runs only from
# "queued" (genq.store.jobs), so a copy is skipped.
@app.task(name=TASK_GENERATE, bind=True, **RETRY_ON_REDIS_ERRORS)
def generate(self: Task, payload: dict[str, Any]) -> dict[str, str]:
    """validate -> run on the shared engine -> persist (all in the engine host, which has the
    job already unless it came with an ETA: see :func:`_forward`)."""
    return engine_host.current().execute(payload, _redelivered(self.request.delivery_info))


def _redelivered(delivery_info: dict[str, Any] | None) -> bool:
    """kombu marks a message it restored from a dead consumer's unacknowledged ones."""
    return bool((delivery_info or {}).get("redelivered"))


@signals.task_received.connect
def _forward(request: Request, **_: Any) -> None:
    """A job goes to the engine host as soon as Celery has taken its message, from the
    consumer's thread; the task, when a pool thread runs it, waits for its end. A task sent
    again with a countdown (a Redis outage's retry) is not forwarded: it starts when Celery runs
    it. No other case holds a received job back here: no rate limits, and the pool has a thread
    for every message the worker may hold (prefetch = concurrency)."""
    if request.name == TASK_GENERATE and request.eta is None:
        engine_host.current().forward(request.args[0], _redelivered(request.delivery_info))


def resend(payload: JobPayload) -> None:
    """Put a job back on its model's queue (the janitor's way to recover a job whose worker
    died; that job may be another model's)."""
    payload = payload.model_copy(update={"resent": True})
    queue = (
        settings.model_queue()
        if payload.model is None
        else model_queue(settings.queue, payload.model)
    )
    send_job(app, payload, queue)


@signals.worker_process_init.connect
def _build_engine(**_: Any) -> None:
    health.set_not_ready("the engine is starting and warming up")
    engine_host.start(NAME)
    try:
        info = engine_host.current().info
    except RuntimeError as exc:
        health.set_not_ready(f"start-up failed: {exc.__cause__ or exc}")
        return
    health.set_startup(info.startup_s)
    health.engine_metrics = engine_host.current().metrics
    health.set_not_ready("warm; the consumer is connecting")


@signals.worker_ready.connect
def _announce(**_: Any) -> None:
    engine_host.current().announce()
    health.set_ready()


@signals.worker_shutting_down.connect
def _grace(**_: Any) -> None:
    health.set_not_ready("shutting down")
    engine_host.shutting_down()


@signals.worker_shutdown.connect
def _stop(**_: Any) -> None:
    engine_host.stop()


def main() -> int:
    """Run the worker; returns its exit code (an engine that cannot load ends it non-zero)."""
    if settings.worker_http_port is not None:
        health.serve(settings.worker_http_host, settings.worker_http_port)
    # The API takes jobs for this model from now on (genq.contract.models): they wait while the engine
    # loads, rather than being refused.
    with sync_redis(settings.broker_url()) as client:
        register(client, settings.served_model())
    return run_worker(app, NAME, settings.model_queue(), settings.log_level)
