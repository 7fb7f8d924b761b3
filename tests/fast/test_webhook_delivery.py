"""Webhook delivery against a real Redis and real HTTP receivers on loopback: the Deliverer's
tries, records and retries, the schedule's move onto the Celery queue, and the job path's events
(with the FAKE engine of test_runner_fake_engine: no vLLM in this tier)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from genq.contract.constants import WEBHOOK_QUEUE, WEBHOOK_SCHEDULE, deliveries_key
from genq.contract.schemas import JobCreate, JobPayload, JobRecord, JobStatus
from genq.contract.settings import WebhookSettings
from genq.contract.webhooks import Delivery, completed_delivery, new_secret
from genq.store.embedded import EmbeddedRedis
from genq.store.jobs import JobStore
from genq.store.queue import make_celery
from genq.webhooks.sender import Deliverer, Scheduler
from tests.fast.test_runner_fake_engine import FakeEngine
from tests.receivers import receiver
from worker.host.runner import RunOptions, run_job

SECRET = new_secret()


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> redis.Redis:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


def settings(redis_server: EmbeddedRedis, **overrides) -> WebhookSettings:
    fields = {
        "redis_url": redis_server.url,
        "webhook_allow_hosts": "127.0.0.1",
        "webhook_retry_schedule_s": [1, 2],
        "webhook_timeout_s": 1,
    }
    return WebhookSettings(**(fields | overrides))


def make_job(redis_server: EmbeddedRedis, url: str, events=("completed",), status="succeeded"):
    """A job record with a webhook, created and moved to ``status`` through the store."""

    async def main() -> JobPayload:
        r = AsyncRedis.from_url(redis_server.url, decode_responses=True)
        store = JobStore(r, ttl_s=600)
        body = JobCreate(prompt="hi", webhook=url, webhook_events_filter=list(events))
        spec = body.webhook_spec()
        record = JobRecord(
            id="job1",
            status=JobStatus.QUEUED,
            created_at=time.time(),
            input=body.to_input(),
            webhook=spec.url,
            webhook_events_filter=spec.events,
            url="http://api.example/v1/jobs/job1",
        )
        await store.create(record)
        if status != "queued":
            await store.transition("job1", [JobStatus.QUEUED], JobStatus(status))
        await r.aclose()
        return JobPayload(id="job1", input=record.input, created_at=record.created_at, webhook=spec)

    return asyncio.run(main())


def scheduled(client: redis.Redis) -> list[tuple[Delivery, float]]:
    return [
        (Delivery.decode(m), score)
        for m, score in client.zrange(WEBHOOK_SCHEDULE, 0, -1, withscores=True)
    ]


def attempts(client: redis.Redis) -> list[dict]:
    return [json.loads(a) for a in client.lrange(deliveries_key("job1"), 0, -1)]


def test_the_terminal_transition_schedules_completed_only_when_subscribed(
    redis_server: EmbeddedRedis, client: redis.Redis
) -> None:
    make_job(redis_server, "http://127.0.0.1:9/h", events=["start"])
    assert scheduled(client) == []
    client.flushdb()
    before = time.time()
    make_job(redis_server, "http://127.0.0.1:9/h", status="canceled")
    ((delivery, at),) = scheduled(client)
    assert delivery == completed_delivery("job1")
    assert before <= at <= time.time()


def test_a_signed_delivery_of_the_job_object(
    redis_server: EmbeddedRedis, client: redis.Redis
) -> None:
    with receiver(SECRET) as rx:
        make_job(redis_server, rx.url)
        ((delivery, _),) = scheduled(client)
        outcome = Deliverer(client, settings(redis_server), [SECRET]).deliver(delivery)
        (got,) = rx.wait_for(1)
    assert outcome.ok and got.verified
    assert got.headers["webhook-id"] == "msg_job1_completed"
    assert got.headers["genq-event"] == "completed"
    assert got.headers["host"] == rx.url.split("/")[2]
    assert got.job["id"] == "job1" and got.job["status"] == "succeeded"
    assert got.job["urls"]["get"] == "http://api.example/v1/jobs/job1"
    (a,) = attempts(client)
    assert (a["event"], a["webhook_id"], a["attempt"], a["status_code"]) == (
        "completed",
        "msg_job1_completed",
        1,
        200,
    )
    assert a["duration_ms"] > 0
    assert len(scheduled(client)) == 1  # only the one we did not take off: nothing new


def test_5xx_is_retried_on_the_schedule_with_one_webhook_id(
    redis_server: EmbeddedRedis, client: redis.Redis
) -> None:
    with receiver(SECRET, answers=[500, 503, 200]) as rx:
        make_job(redis_server, rx.url)
        deliverer = Deliverer(client, settings(redis_server), [SECRET])
        delivery = completed_delivery("job1")
        client.delete(WEBHOOK_SCHEDULE)
        for expected_delay in (1, 2, None):
            now = time.time()
            deliverer.deliver(delivery)
            pending = scheduled(client)
            if expected_delay is None:
                assert pending == []
                break
            ((delivery, at),) = pending
            assert 0.85 * expected_delay <= at - now <= 1.15 * expected_delay + 0.5
            client.delete(WEBHOOK_SCHEDULE)
        got = rx.wait_for(3)
    assert {g.headers["webhook-id"] for g in got} == {"msg_job1_completed"}
    assert all(g.verified for g in got)
    assert [(a["attempt"], a["status_code"]) for a in attempts(client)] == [
        (1, 500),
        (2, 503),
        (3, 200),
    ]


@pytest.mark.parametrize("status", [410, 400, 404, 301])
def test_other_answers_are_final(
    redis_server: EmbeddedRedis, client: redis.Redis, status: int
) -> None:
    with receiver(SECRET, answers=[status], headers={"location": "http://10.0.0.1/"}) as rx:
        make_job(redis_server, rx.url)
        client.delete(WEBHOOK_SCHEDULE)
        outcome = Deliverer(client, settings(redis_server), [SECRET]).deliver(
            completed_delivery("job1")
        )
        rx.wait_for(1)
    assert outcome.status_code == status and not outcome.retryable
    assert scheduled(client) == []
    assert len(rx.got) == 1  # no redirect followed


def test_429_waits_as_long_as_retry_after_asks(
    redis_server: EmbeddedRedis, client: redis.Redis
) -> None:
    with receiver(SECRET, answers=[429], headers={"retry-after": "30"}) as rx:
        make_job(redis_server, rx.url)
        client.delete(WEBHOOK_SCHEDULE)
        now = time.time()
        Deliverer(client, settings(redis_server), [SECRET]).deliver(completed_delivery("job1"))
    ((delivery, at),) = scheduled(client)
    assert delivery.n == 1 and 29 <= at - now <= 32


def test_a_receiver_that_hangs_times_out_and_is_retried(
    redis_server: EmbeddedRedis, client: redis.Redis
) -> None:
    with receiver(SECRET, hang_s=3) as rx:
        make_job(redis_server, rx.url)
        client.delete(WEBHOOK_SCHEDULE)
        t0 = time.monotonic()
        outcome = Deliverer(client, settings(redis_server), [SECRET]).deliver(
            completed_delivery("job1")
        )
        assert time.monotonic() - t0 < 2.5
    assert outcome.status_code is None and "timeout" in outcome.error
    (a,) = attempts(client)
    assert "timeout" in a["error"] and "status_code" not in a
    assert [d.n for d, _ in scheduled(client)] == [1]


def test_a_url_refused_at_delivery_time_is_recorded_and_never_sent(
    redis_server: EmbeddedRedis, client: redis.Redis
) -> None:
    with receiver(SECRET) as rx:
        make_job(redis_server, rx.url)
        client.delete(WEBHOOK_SCHEDULE)
        strict = settings(redis_server, webhook_allow_hosts="")  # DNS/allow-list changed since
        outcome = Deliverer(client, strict, [SECRET]).deliver(completed_delivery("job1"))
        time.sleep(0.2)
        assert rx.got == []
    assert outcome.refused and "loopback" in outcome.error
    (a,) = attempts(client)
    assert a["error"].startswith("refused:")
    assert scheduled(client) == []  # final


def test_a_receiver_that_is_down_is_retried(
    redis_server: EmbeddedRedis, client: redis.Redis
) -> None:
    with receiver(SECRET) as rx:
        url = rx.url
    make_job(redis_server, url)  # nobody listens there any more
    client.delete(WEBHOOK_SCHEDULE)
    outcome = Deliverer(client, settings(redis_server), [SECRET]).deliver(
        completed_delivery("job1")
    )
    assert outcome.status_code is None and "ConnectError" in outcome.error
    assert [d.n for d, _ in scheduled(client)] == [1]


def test_an_expired_job_is_dropped(redis_server: EmbeddedRedis, client: redis.Redis) -> None:
    outcome = Deliverer(client, settings(redis_server), [SECRET]).deliver(
        completed_delivery("gone")
    )
    assert outcome is None and attempts(client) == []


def test_the_scheduler_queues_due_deliveries_once_as_celery_messages(
    redis_server: EmbeddedRedis, client: redis.Redis
) -> None:
    celery = make_celery(settings(redis_server), "sched-test")
    due, later = completed_delivery("a"), completed_delivery("b")
    client.zadd(WEBHOOK_SCHEDULE, {due.encode(): time.time() - 1, later.encode(): time.time() + 60})
    first, second = Scheduler(client, celery, 1), Scheduler(client, celery, 1)
    assert first.move_due() == 1
    assert second.move_due() == 0  # another webhooks process finds nothing left
    (raw,) = client.lrange(WEBHOOK_QUEUE, 0, -1)
    message = json.loads(raw)
    assert message["headers"]["task"] == "genq.webhook"
    assert message["properties"]["delivery_info"]["routing_key"] == WEBHOOK_QUEUE
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert Delivery.decode(args[0]) == due and kwargs == {}
    assert [d for d, _ in scheduled(client)] == [later]
    celery.close()


def test_a_job_schedules_start_throttled_output_and_completed(
    redis_server: EmbeddedRedis, client: redis.Redis
) -> None:
    payload = make_job(
        redis_server,
        "http://127.0.0.1:9/h",
        events=["start", "output", "completed"],
        status="queued",
    )

    async def run() -> JobStatus:
        r = AsyncRedis.from_url(redis_server.url, decode_responses=True)
        try:
            # 150 tokens at 10 ms: about 1.5 s of generation.
            return await run_job(payload, JobStore(r, 600), FakeEngine(tokens=150), RunOptions("w"))
        finally:
            await r.aclose()

    t0 = time.time()
    assert asyncio.run(run()) is JobStatus.SUCCEEDED
    elapsed = time.time() - t0
    pending = sorted(scheduled(client), key=lambda p: p[1])
    events = [d.event for d, _ in pending]
    assert events[0] == "start" and events[-1] == "completed"
    outputs = [(d, at) for d, at in pending if d.event == "output"]
    assert 1 <= len(outputs) <= elapsed / 0.5 + 1
    assert len({d.webhook_id for d, _ in outputs}) == len(outputs)
    gaps = [b - a for (_, a), (_, b) in zip(outputs, outputs[1:])]
    assert all(gap >= 0.45 for gap in gaps), gaps
