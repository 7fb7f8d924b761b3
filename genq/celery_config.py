"""The Celery configuration both sides share. The API sends tasks by name with this app and never
imports the worker's code; the worker adds its pool, tasks and signal handlers on top."""

from __future__ import annotations

from celery import Celery

from genq.constants import TASK_GENERATE
from genq.schemas import JobPayload
from genq.settings import CommonSettings

_ARGSREPR_CHARS = 80  # what Flower shows of a prompt

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


def _argsrepr(payload: JobPayload) -> str:
    job = payload.input
    text = job.prompt if job.prompt is not None else job.messages[-1].content
    short = text if len(text) <= _ARGSREPR_CHARS else text[: _ARGSREPR_CHARS - 1] + "…"
    return repr(short)


def send_job(celery: Celery, payload: JobPayload, queue: str) -> None:
    """Put a job's message on its queue (blocking: kombu). The task id is the job id, and Flower
    shows the prompt cut short, never more."""
    celery.send_task(
        TASK_GENERATE,
        args=[payload.model_dump(mode="json")],
        task_id=payload.id,
        queue=queue,
        argsrepr=_argsrepr(payload),
        kwargsrepr="{}",
    )
