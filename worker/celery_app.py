"""The worker's Celery app: shared config, the warm threads pool, the task, the lifecycle signals.

Start it with ``genq worker`` (which calls :func:`main`). This process consumes the queue and
forwards each job to the engine host, the process it starts to run them (worker.engine_client,
worker.host.main).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from celery import Celery, Task, signals
from celery.worker.request import Request

from genq.contract.constants import TASK_GENERATE, model_queue
from genq.contract.schemas import JobPayload
from genq.contract.settings import WorkerSettings, worker_settings
from genq.store.models import register
from genq.store.queue import RETRY_ON_REDIS_ERRORS, make_celery, run_worker, send_job
from genq.store.redis_client import sync_redis
from worker.engine_client import EngineHost
from worker.health import WorkerHealth

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


class WorkerEngine:
    """This worker's engine host: started by worker_process_init (the pool sends it before the
    consumer connects), closed by worker_shutdown. Celery logs an exception a signal handler
    raises and goes on, so a start that failed is kept here, and :meth:`host` raises it again:
    the pool's on_start calls it, and the worker exits non-zero."""

    def __init__(self) -> None:
        self._host: EngineHost | None = None
        self._start_error: BaseException | None = None
        self._starting = False

    def start(self, name: str) -> None:
        self._starting = True
        try:
            self._host = EngineHost.start(name, resend)
        except BaseException as exc:  # noqa: BLE001 - raised again by host(), in the pool
            log.error("worker start-up failed: %s", exc)
            self._start_error = exc
        finally:
            self._starting = False

    def host(self) -> EngineHost:
        if self._host is None:
            raise RuntimeError("the worker's engine did not start") from self._start_error
        return self._host

    def shutting_down(self) -> None:
        if self._host is not None:
            self._host.shutting_down()
        elif self._starting:
            # Told to stop while the engine host builds and warms its engine, which nothing
            # interrupts (minutes on a cold GPU): exit now, rather than be killed once the
            # supervisor's grace is over. The engine host and vLLM's processes are in this
            # process's group, which the supervisor (`genq up`, `genq worker --gpus`) kills once
            # this process has exited; alone, the host exits when it finds this end gone.
            log.info("stopped while the engine was starting")
            logging.shutdown()
            os._exit(0)

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None


engine = WorkerEngine()


# A job sent back to the queue on a Redis outage is safe to run again: it runs only from
# "queued" (genq.store.jobs), so a copy is skipped.
@app.task(name=TASK_GENERATE, bind=True, **RETRY_ON_REDIS_ERRORS)
def generate(self: Task, payload: dict[str, Any]) -> dict[str, str]:
    """validate -> run on the shared engine -> persist (all in the engine host, which has the
    job already unless it came with an ETA: see :func:`_forward`). Logs one line per job, in
    place of Celery's two (held back: genq.contract.logs)."""
    started = time.perf_counter()
    result = engine.host().execute(payload, _redelivered(self.request.delivery_info))
    # From the task's start: the job runs since its message came, a moment before (_forward).
    ms = (time.perf_counter() - started) * 1000
    log.info("job %s %s in %.0f ms", result["id"], result["status"], ms)
    return result


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
        engine.host().forward(request.args[0], _redelivered(request.delivery_info))


def resend(payload: JobPayload) -> None:
    """Put a job back on its model's queue: the engine host's janitor recovers a job whose worker
    died this way (that job may be another model's); the host has no Celery app to send with."""
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
    engine.start(NAME)
    try:
        host = engine.host()
    except RuntimeError as exc:
        health.set_not_ready(f"start-up failed: {exc.__cause__ or exc}")
        return
    health.set_startup(host.info.startup_s)
    health.engine_metrics = host.metrics
    health.set_not_ready("warm; the consumer is connecting")


@signals.worker_ready.connect
def _announce(**_: Any) -> None:
    engine.host().announce()
    health.set_ready()


@signals.worker_shutting_down.connect
def _grace(**_: Any) -> None:
    health.set_not_ready("shutting down")
    engine.shutting_down()


@signals.worker_shutdown.connect
def _stop(**_: Any) -> None:
    engine.close()


def main() -> int:
    """Run the worker; returns its exit code (an engine that cannot load ends it non-zero)."""
    if settings.worker_http_port is not None:
        health.serve(settings.worker_http_host, settings.worker_http_port)
    # The API takes jobs for this model from now on (genq.contract.models): they wait while the engine
    # loads, rather than being refused.
    with sync_redis(settings.broker_url()) as client:
        register(client, settings.served_model())
    return run_worker(app, NAME, settings.model_queue(), settings.log_level)
