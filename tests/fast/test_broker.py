"""worker/broker.py: kombu's Redis transport with the delivery's bookkeeping reply read after the
message was handed over. On a real Redis, it keeps every promise of kombu's own: a message is
recorded unacknowledged while it is held, forgotten once acknowledged, and given back to the
queue by a consumer that goes away without acknowledging it. A real Celery worker on it, acking
from its pool threads: tests/fast/test_consumer_events.py."""

from __future__ import annotations

import json

import pytest
import redis
from kombu import Connection, Exchange, Queue

from worker.broker import BROKER_TRANSPORT, transport_for

QUEUE = Queue("genq-test-broker", Exchange("genq-test-broker", type="direct"), "genq-test-broker")
BOTH = pytest.mark.parametrize("transport", ["redis", BROKER_TRANSPORT])


def publish(url: str, *bodies: dict) -> None:
    with Connection(url) as conn:
        producer = conn.Producer()
        for body in bodies:
            producer.publish(
                body, exchange=QUEUE.exchange, routing_key="genq-test-broker", declare=[QUEUE]
            )


def consume(url: str, transport: str, n: int, on_message=None) -> tuple[Connection, list]:
    """Take ``n`` messages (not acknowledged unless ``on_message`` does); the connection stays
    open, holding them."""
    conn = Connection(url, transport=transport)
    taken: list = []

    def take(body: dict, message) -> None:
        taken.append((body, message))
        if on_message is not None:
            on_message(body, message)

    consumer = conn.Consumer(QUEUE, callbacks=[take])
    consumer.consume()
    while len(taken) < n:
        conn.drain_events(timeout=5)
    return conn, taken


def unacked(client: redis.Redis) -> dict[str, list]:
    return {tag: json.loads(raw) for tag, raw in client.hgetall("unacked").items()}


def test_the_worker_takes_it_for_redis_and_kombus_own_for_tls() -> None:
    assert transport_for("redis://:pw@localhost:6379/0") == BROKER_TRANSPORT
    assert transport_for("rediss://:pw@redis.example.com:6380/0?ssl_cert_reqs=required") is None


@BOTH
def test_a_held_message_is_recorded_unacknowledged_until_acknowledged(
    redis_server, sync_redis, transport
) -> None:
    publish(redis_server.url, {"n": 1}, {"n": 2})
    conn, taken = consume(redis_server.url, transport, 2)
    try:
        held = unacked(sync_redis)
        assert sorted(held) == sorted(m.delivery_tag for _, m in taken)
        assert sync_redis.zcard("unacked_index") == 2
        for _, message in taken:  # kombu's record: the raw message, its exchange and key
            assert held[message.delivery_tag][1:] == ["genq-test-broker", "genq-test-broker"]
        for _, message in taken:
            message.ack()
        assert unacked(sync_redis) == {} and sync_redis.zcard("unacked_index") == 0
    finally:
        conn.release()


@BOTH
def test_a_message_acknowledged_as_it_arrives_leaves_no_record(
    redis_server, sync_redis, transport
) -> None:
    """The ack comes before the transport read its own bookkeeping's reply: it waits for it,
    so the record it removes is there to remove."""
    publish(redis_server.url, {"n": 1})
    conn, taken = consume(redis_server.url, transport, 1, lambda _, message: message.ack())
    try:
        assert [body for body, _ in taken] == [{"n": 1}]
        assert unacked(sync_redis) == {} and sync_redis.zcard("unacked_index") == 0
    finally:
        conn.release()


@BOTH
def test_a_consumer_gone_without_acknowledging_gives_its_message_back(
    redis_server, sync_redis, transport
) -> None:
    publish(redis_server.url, {"n": 7})
    conn, taken = consume(redis_server.url, transport, 1)
    conn.release()  # closing the channel restores what it held (kombu's restore_at_shutdown)
    assert unacked(sync_redis) == {}
    again, retaken = consume(redis_server.url, transport, 1)
    try:
        assert [body for body, _ in retaken] == [{"n": 7}]
        assert retaken[0][1].delivery_info["redelivered"] is True
        retaken[0][1].ack()
    finally:
        again.release()


def test_a_refused_record_is_raised_once_the_message_was_taken(redis_server, sync_redis) -> None:
    """Redis refuses the bookkeeping (its key holds another type): kombu's own transport raised
    before handing the message over; this one hands it over (the job goes to the engine) and
    raises the refusal when it reads the reply. Its connection is dropped, not reused mid-reply."""
    sync_redis.set("unacked", "not a hash")
    publish(redis_server.url, {"n": 1})
    conn = Connection(redis_server.url, transport=BROKER_TRANSPORT)
    taken: list = []
    try:
        conn.Consumer(QUEUE, callbacks=[lambda body, _: taken.append(body)]).consume()
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            conn.drain_events(timeout=5)
        assert taken == [{"n": 1}]
        sync_redis.delete("unacked")
        publish(redis_server.url, {"n": 2})
        conn.drain_events(timeout=5)
        assert taken == [{"n": 1}, {"n": 2}]
        assert len(unacked(sync_redis)) == 1
    finally:
        conn.release()
