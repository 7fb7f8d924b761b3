"""worker/consumer.py: a real Celery worker (threads pool, genq's settings, the batching consumer)
on a real Redis sends every task event, in fewer publishes than
events, and acknowledges every message."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
JOBS = 200

CHILD = f"""
import sys, threading, time, os
sys.path.insert(0, {str(ROOT)!r})
from celery import Celery
from genq.store.queue import celery_config
from genq.contract.settings import CommonSettings

app = Celery("consumer-events")
app.conf.update(celery_config(CommonSettings(redis_url=sys.argv[1], queue="consumer-events")))
# As genq's worker runs (worker.celery_app): events in batches.
app.conf.worker_consumer = "worker.consumer:BatchedEventsConsumer"
done = []

@app.task(name="consumer_events.noop")
def noop(i):
    done.append(i)

for i in range({JOBS}):
    noop.apply_async((i,))

def stop():
    while len(done) < {JOBS}:
        time.sleep(0.05)
    time.sleep(0.5)  # the last events' flush is 5 ms away
    os.kill(os.getpid(), 15)  # a warm shutdown

threading.Thread(target=stop, daemon=True).start()
app.Worker(pool="threads", concurrency=64, loglevel="WARNING", quiet=True,
           without_gossip=True, without_mingle=True, without_heartbeat=True).start()
"""


def test_every_task_event_is_sent_in_fewer_publishes(redis_server, sync_redis):
    listener = redis.Redis.from_url(redis_server.url).pubsub()
    listener.psubscribe("*celeryev*task*")
    listener.get_message(timeout=1)  # the subscription's confirmation
    publishes: list[list[dict]] = []

    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            if (message := listener.get_message(timeout=0.1)) is None:
                continue
            envelope = json.loads(message["data"])  # kombu's Redis envelope, body in base64
            body = json.loads(base64.b64decode(envelope["body"]))
            publishes.append(body if isinstance(body, list) else [body])

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    subprocess.run(
        [sys.executable, "-c", CHILD, redis_server.url], check=True, timeout=120, cwd=ROOT
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(map(len, publishes)) < 4 * JOBS:
        time.sleep(0.1)
    stop.set()
    thread.join()
    listener.close()
    # The worker's events (the sender's task-sent events are one publish each, as Celery sends).
    publishes = [b for b in publishes if b[0]["type"] != "task-sent"]
    events = [event for batch in publishes for event in batch]
    by_type = {t: sum(e["type"] == t for e in events) for t in {e["type"] for e in events}}
    assert by_type == {"task-received": JOBS, "task-started": JOBS, "task-succeeded": JOBS}
    assert len({e["uuid"] for e in events if e["type"] == "task-succeeded"}) == JOBS
    assert len(publishes) < len(events) / 2, f"{len(publishes)} publishes for {len(events)}"
    # Every message acknowledged (from the pool's threads): none left recorded as held.
    assert sync_redis.hlen("unacked") == 0 and sync_redis.zcard("unacked_index") == 0
