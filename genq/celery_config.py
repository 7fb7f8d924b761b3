"""The Celery configuration both sides share. The API sends tasks by name with this app and never
imports the worker's code; the worker adds its pool, tasks and signal handlers on top."""

from __future__ import annotations

from celery import Celery

from genq.settings import CommonSettings

# Redis hands an unacknowledged message back only after this long; it must exceed the longest job
# or long jobs run twice (see the reliability notes in README).
VISIBILITY_TIMEOUT_S = 3600


def celery_config(settings: CommonSettings) -> dict[str, object]:
    return {
        "broker_url": settings.broker_url(),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        # JSON only, on the broker and anywhere else.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # Results live in genq's own job records (genq.store), not in Celery's result backend.
        "task_ignore_result": True,
        "task_default_queue": settings.queue,
        # A job's message is acknowledged when the job ends, not when it starts.
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        # Events for Flower.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Logging is configured once by `genq`; vLLM's prints stay prints.
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }


def make_celery(settings: CommonSettings, main: str) -> Celery:
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
