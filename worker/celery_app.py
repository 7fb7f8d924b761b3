"""The worker's Celery app: shared config, the warm threads pool, the task, the lifecycle signals.

Start it with ``genq worker`` (which calls :func:`main`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from genq.celery_config import make_celery, send_job
from genq.constants import TASK_GENERATE
from genq.schemas import JobPayload
from genq.settings import WorkerSettings, worker_settings
from worker import runtime

log = logging.getLogger(__name__)

settings: WorkerSettings = worker_settings()
app: Celery = make_celery(settings, "genq-worker")
app.conf.update(
    worker_pool="worker.pool:WarmThreadPool",
    worker_concurrency=settings.worker_concurrency,
    # Model load + warm-up, for the pools that check it.
    worker_proc_alive_timeout=900,
)
NAME = settings.worker_name or runtime.default_worker_name()


@app.task(
    name=TASK_GENERATE,
    # Redis unreachable for longer than the client's own retries: send the job back to the queue
    # rather than drop it. Safe: a job runs only from "queued" (genq.store), so a copy is skipped.
    autoretry_for=(RedisConnectionError, RedisTimeoutError),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=None,
)
def generate(payload: dict[str, Any]) -> dict[str, str]:
    """validate -> run on the shared engine -> persist (all in the runtime)."""
    return runtime.current().execute(payload)


def _resend(payload: JobPayload) -> None:
    """Put a job back on the queue (the janitor's way to recover a job whose worker died)."""
    send_job(app, payload, settings.queue)


@signals.worker_process_init.connect
def _build_engine(**_: Any) -> None:
    runtime.start(settings, NAME, _resend)


@signals.worker_ready.connect
def _announce(**_: Any) -> None:
    runtime.current().announce()


@signals.worker_shutting_down.connect
def _grace(**_: Any) -> None:
    runtime.shutting_down()


@signals.worker_shutdown.connect
def _stop(**_: Any) -> None:
    runtime.stop()


def main() -> int:
    """Run the worker; returns its exit code. (``app.worker_main`` and ``app.start`` drop it, and
    an engine that cannot load must end the process non-zero, so that a supervisor notices.)"""
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = app  # what app.start() does
    code = celery_command.main(
        args=[
            "worker",
            f"--hostname={NAME}",
            f"--queues={settings.queue}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
        ],
        standalone_mode=False,
    )
    return code if isinstance(code, int) else 0
