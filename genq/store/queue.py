"""The Celery configuration both sides share. The API sends tasks by name with this app and never
imports the worker's code; the worker adds its pool, tasks and signal handlers on top."""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
import warnings
from typing import Any

from celery import Celery
from celery.exceptions import SecurityWarning
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from genq.contract.constants import TASK_GENERATE
from genq.contract.logs import verbose
from genq.contract.schemas import JobPayload
from genq.contract.settings import CommonSettings

_ARGSREPR_PROMPT_CHARS = 40  # what Flower shows of a prompt


def celery_config(settings: CommonSettings) -> dict[str, object]:
    return {
        "broker_url": settings.broker_url(),
        "broker_connection_retry_on_startup": True,
        # Redis hands an unacknowledged message back after this long: past the longest job
        # (GENQ_MAX_JOB_SECONDS), so that none runs twice.
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s()},
        # JSON only, on the broker and anywhere else.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # Results live in genq's own job records (genq.store.jobs), not in Celery's result backend.
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


# Task options for genq's tasks: Redis unreachable for longer than the client's own retries sends
# the message back to the queue (with backoff) rather than drop it.
RETRY_ON_REDIS_ERRORS = {
    "autoretry_for": (RedisConnectionError, RedisTimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": None,
}


def run_celery(app: Celery, args: list[str]) -> int:
    """Run a ``celery`` subcommand (``worker``, ``flower``) of ``app`` in this process; returns
    its exit code (``app.worker_main`` and ``app.start`` drop it, and a supervisor must see a
    failed start). Nothing of the configuration, the broker URL included, is on the command
    line, where ``ps`` would show it."""
    from celery.bin.celery import celery as celery_command  # noqa: PLC0415

    celery_command.params[0].default = app  # what app.start() does
    code = celery_command.main(args=args, standalone_mode=False)
    return code if isinstance(code, int) else 0


def run_worker(app: Celery, hostname: str, queue: str, log_level: str) -> int:
    """Run a Celery worker of ``app`` on ``queue`` in this process; returns its exit code.
    Celery's banner (its configuration, ~20 lines per process) only at ``GENQ_LOG_LEVEL=debug``:
    ``genq up`` prints what a user needs itself."""
    if not verbose(log_level) and hasattr(os, "geteuid") and os.geteuid() == 0:
        # Celery's seven-line warning about running as root, in one line.
        warnings.filterwarnings("ignore", category=SecurityWarning)
        logging.getLogger(__name__).warning(
            "running as root: Celery advises a user of its own (GENQ_LOG_LEVEL=debug: its words)"
        )
    return run_celery(
        app,
        [
            *([] if verbose(log_level) else ["--quiet"]),
            "worker",
            f"--hostname={hostname}",
            f"--queues={queue}",
            f"--loglevel={log_level}",
            "--without-gossip",
            "--without-mingle",
        ],
    )


def make_celery(settings: CommonSettings, main: str) -> Celery:
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def job_argsrepr(payload: JobPayload) -> str:
    """What Flower shows as a job's arguments: its id cut short, the prompt
    (of a chat: its last message) cut to ~40 characters, and ``max_tokens``. Nothing else of the
    payload: the webhook URL may carry a token, the metadata anything.

    ``job 1a2b3c4d… "What is the capital of France?" (max_tokens 64)``
    """
    job = payload.input
    if job.messages is not None:
        text, what = job.messages[-1].content, f"chat of {len(job.messages)}, last "
    else:
        text, what = job.prompt or "", ""
    if len(text) > _ARGSREPR_PROMPT_CHARS:
        text = text[: _ARGSREPR_PROMPT_CHARS - 1] + "…"
    quoted = json.dumps(text, ensure_ascii=False)  # quotes, newlines shown as \n
    return f"job {payload.id[:8]}… {what}{quoted} (max_tokens {job.sampling.max_tokens})"


def celery_message(
    celery: Celery, task: str, task_id: str, args: list[Any], queue: str, argsrepr: str
) -> str:
    """A Celery message exactly as ``send_task`` puts it on a Redis queue (kombu's Redis
    transport: a JSON envelope LPUSHed on the list named after the queue), for callers that push
    it themselves, inside a Lua step of their own (genq.store.jobs, the webhooks scheduler). Headers
    and body come from Celery's own protocol-2 builder; a fast test checks the result against
    what ``send_task`` pushes."""
    msg = celery.amqp.as_task_v2(
        task_id,
        task,
        args=args,
        argsrepr=argsrepr,
        kwargsrepr="{}",
        ignore_result=None,  # as send_task: the task's own setting decides
    )
    body = json.dumps(msg.body, separators=(",", ":")).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": msg.headers,
            "properties": {
                **msg.properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        },
        separators=(",", ":"),
    )


def task_message(celery: Celery, payload: JobPayload, queue: str) -> str:
    """The job's message, as ``send_job`` puts it on its queue: the API writes the job record and
    its message in one atomic Redis step (genq.store.jobs)."""
    return celery_message(
        celery,
        TASK_GENERATE,
        payload.id,
        [payload.model_dump(mode="json")],
        queue,
        job_argsrepr(payload),
    )


def send_job(celery: Celery, payload: JobPayload, queue: str) -> None:
    """Put a job's message on its queue (blocking: kombu): the janitor's resend. The task id is
    the job id, and Flower shows :func:`job_argsrepr`, never more."""
    celery.send_task(
        TASK_GENERATE,
        args=[payload.model_dump(mode="json")],
        task_id=payload.id,
        queue=queue,
        argsrepr=job_argsrepr(payload),
        kwargsrepr="{}",
    )
