"""The API pushes a job's Celery message itself, in the same Redis step as the job's record
(genq.store). That message must be the one Celery's own ``send_task`` would have put there, or the
worker would not run it: compare the two, side by side, on a real Redis."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis

from genq.celery_config import make_celery, send_job, task_message
from genq.redis_server import EmbeddedRedis
from genq.schemas import JobInput, JobPayload
from genq.settings import CommonSettings

# Per message or per process, so they differ between the two; everything else must match.
_VARYING_PROPERTIES = {"delivery_tag", "reply_to", "argsrepr", "kwargsrepr"}


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> redis.Redis:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushdb()
    return client


def test_task_message_is_what_send_task_pushes(
    redis_server: EmbeddedRedis, client: redis.Redis
) -> None:
    settings = CommonSettings(redis_url=redis_server.url, queue="genq.test-wire")
    celery = make_celery(settings, "wire-test")
    payload = JobPayload(
        id="0123abcd",
        input=JobInput.model_validate(
            {"prompt": "Ünïcode and a long prompt " * 10, "sampling": {"max_tokens": 7}}
        ),
        created_at=time.time(),
    )
    try:
        send_job(celery, payload, settings.queue)
    finally:
        celery.close()
    (sent,) = [json.loads(m) for m in client.lrange(settings.queue, 0, -1)]
    ours = json.loads(task_message(celery, payload, settings.queue))

    assert json.loads(base64.b64decode(ours["body"])) == json.loads(base64.b64decode(sent["body"]))
    assert ours["headers"] == sent["headers"]
    assert {k: v for k, v in ours.items() if k not in ("body", "headers", "properties")} == {
        k: v for k, v in sent.items() if k not in ("body", "headers", "properties")
    }
    strip = lambda props: {k: v for k, v in props.items() if k not in _VARYING_PROPERTIES}  # noqa: E731
    assert strip(ours["properties"]) == strip(sent["properties"])
    assert ours["properties"]["delivery_tag"] != sent["properties"]["delivery_tag"]
    # Flower shows the prompt cut short.
    assert ours["headers"]["argsrepr"].endswith("…'")
