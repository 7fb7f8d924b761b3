"""The webhooks process: a Celery worker on the webhooks queue only, with the threads pool and no
engine, plus the scheduler thread that feeds that queue (genq.webhooks.sender).

Start it with ``genq webhooks`` (which calls :func:`main`). Any number may run: each due delivery
is queued once, and each queued delivery is taken by one of them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import redis
from celery import Celery, signals

from genq.contract.constants import TASK_WEBHOOK, WEBHOOK_QUEUE
from genq.contract.settings import WebhookSettings, webhook_settings
from genq.contract.webhooks import Delivery, load_or_create_secret
from genq.store.queue import RETRY_ON_REDIS_ERRORS, make_celery, run_worker
from genq.store.redis_client import sync_redis
from genq.webhooks.sender import Deliverer, Scheduler

log = logging.getLogger(__name__)

settings: WebhookSettings = webhook_settings()
app: Celery = make_celery(settings, "genq-webhooks")
app.conf.update(
    worker_pool="threads",
    worker_concurrency=settings.webhook_concurrency,
    task_default_queue=WEBHOOK_QUEUE,
)

_deliverer: Deliverer | None = None
_scheduler: Scheduler | None = None


def signing_secrets(settings: WebhookSettings) -> list[str]:
    """``GENQ_WEBHOOK_SECRET`` (and the previous one while rotating); unset: the dev secret kept
    under the data dir, made (and printed, once) on first start."""
    if settings.webhook_secret is not None:
        return settings.signing_secrets()
    secret, created = load_or_create_secret(settings.data_dir)
    if created:
        print(
            f"genq: new webhook signing secret (kept in {settings.data_dir}): {secret}", flush=True
        )
    previous = settings.webhook_secret_previous
    return [secret] + ([previous.get_secret_value()] if previous is not None else [])


def _redis() -> redis.Redis:
    return sync_redis(settings.broker_url())


@app.task(name=TASK_WEBHOOK, **RETRY_ON_REDIS_ERRORS)
def deliver(delivery: dict[str, Any]) -> dict[str, Any]:
    """One try of one webhook event (retries are scheduled by the Deliverer, not by Celery)."""
    assert _deliverer is not None, "the webhooks process did not start its deliverer"
    outcome = _deliverer.deliver(Delivery.decode(delivery))
    if outcome is None:
        return {"dropped": True}
    return {"status_code": outcome.status_code, "error": outcome.error}


@signals.worker_ready.connect
def _start_scheduler(**_: Any) -> None:
    global _scheduler  # noqa: PLW0603 - one per process
    _scheduler = Scheduler(_redis(), app, settings.webhook_poll_s)
    _scheduler.start()


@signals.worker_shutdown.connect
def _stop_scheduler(**_: Any) -> None:
    if _scheduler is not None:
        _scheduler.stop()


def main() -> int:
    """Run the webhooks process; returns its exit code."""
    global _deliverer  # noqa: PLW0603
    _deliverer = Deliverer(_redis(), settings, signing_secrets(settings))
    return run_worker(app, f"genq-webhooks-{os.getpid()}@%h", WEBHOOK_QUEUE, settings.log_level)
