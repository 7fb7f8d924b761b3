"""The API pushes a job's Celery message itself, in the same Redis step as the job's record
(genq.store.jobs). That message must be the one Celery's own ``send_task`` would have put there, or the
worker would not run it: compare the two, side by side, on a real Redis."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis
from celery import Celery

from genq.contract.schemas import JobCreate, JobInput, JobPayload
from genq.contract.settings import CommonSettings
from genq.store.embedded import EmbeddedRedis
from genq.store.queue import job_argsrepr, make_celery, send_job, task_message

# Per message or per process, so they differ between the two; everything else must match.
# send_task also copies argsrepr/kwargsrepr into the properties (kombu passes extra publish
# options on); the worker, and Flower through it, read them from the headers, compared below.
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
    # What Flower shows, the same both ways (the janitor resends with send_job).
    assert ours["headers"]["argsrepr"] == sent["headers"]["argsrepr"] == job_argsrepr(payload)
    assert (
        ours["headers"]["argsrepr"]
        == 'job 0123abcd… "Ünïcode and a long prompt Ünïcode and a…" (max_tokens 7)'
    )
    assert ours["headers"]["kwargsrepr"] == sent["headers"]["kwargsrepr"] == "{}"


def _offline_celery() -> Celery:
    """Building a message needs only the app's configuration: no broker is contacted."""
    return make_celery(CommonSettings(redis_url="redis://127.0.0.1:1/0"), "repr-test")


def _payload(**body: object) -> JobPayload:
    job = JobCreate.model_validate(body)
    return JobPayload(
        id="1a2b3c4d5e6f4a5b8c9d0e1f2a3b4c5d",
        input=job.to_input(),
        created_at=time.time(),
        webhook=job.webhook_spec(),
    )


def test_flower_shows_a_short_prompt_and_nothing_else_of_the_job() -> None:
    secret_url = "https://hooks.example.com/genq?token=s3cr3t-t0k3n"
    payload = _payload(
        prompt="What is the capital of France? Answer in one word, then explain why.",
        max_tokens=64,
        webhook=secret_url,
        metadata={"customer": "ACME-secret-account"},
    )
    shown = job_argsrepr(payload)
    assert shown == 'job 1a2b3c4d… "What is the capital of France? Answer i…" (max_tokens 64)'
    assert len(shown.split('"')[1]) == 40
    for hidden in (secret_url, "s3cr3t", "hooks.example.com", "ACME", payload.id):
        assert hidden not in shown
    # The message itself carries the payload (the worker needs it); Flower is shown argsrepr.
    headers = json.loads(task_message(_offline_celery(), payload, "q"))["headers"]
    assert headers["argsrepr"] == shown and "s3cr3t" not in headers["argsrepr"]


def test_a_short_prompt_is_whole_and_a_chat_shows_its_last_message() -> None:
    assert job_argsrepr(_payload(prompt='Hi\n"there"', max_tokens=8)) == (
        'job 1a2b3c4d… "Hi\\n\\"there\\"" (max_tokens 8)'
    )
    chat = _payload(
        messages=[
            {"role": "system", "content": "You answer with one word."},
            {"role": "user", "content": "What is the capital of France?"},
        ]
    )
    assert job_argsrepr(chat) == (
        'job 1a2b3c4d… chat of 2, last "What is the capital of France?" (max_tokens 512)'
    )


def test_the_janitors_resend_marks_the_job_resent_on_its_models_queue(
    redis_server: EmbeddedRedis, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job sent again after its worker died says so (``resent``), so the worker that takes
    it claims it before its engine sees it (worker.host.runner): a job that kills engines is
    counted, and failed after ``GENQ_MAX_ATTEMPTS``, without being run again."""
    import importlib  # noqa: PLC0415
    import sys  # noqa: PLC0415

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("GENQ_MODEL_NAME", "served-here")
    monkeypatch.delitem(sys.modules, "worker.celery_app", raising=False)
    celery_app = importlib.import_module("worker.celery_app")
    try:
        job = JobInput.model_validate({"prompt": "hi", "sampling": {"max_tokens": 4}})
        payload = JobPayload(id="abc123", input=job, created_at=time.time(), model="other")
        celery_app.resend(payload)
        (raw,) = client.lrange("genq.generate.other", 0, -1)
    finally:
        sys.modules.pop("worker.celery_app", None)
    body = json.loads(base64.b64decode(json.loads(raw)["body"]))
    sent = JobPayload.model_validate(body[0][0])
    assert sent.resent and sent.id == "abc123" and sent.model == "other"
    assert not payload.resent  # the janitor's copy, not the record's payload
