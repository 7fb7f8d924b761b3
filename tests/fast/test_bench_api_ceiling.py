"""The API-ceiling harness (ops/bench/api_ceiling.py, and api_burst.py on it) starts genq's API the
way it measures it, and the jobs it sends are real: a record and a queue message each. Its load
(wrk) is not run here; this catches a harness the API has moved away from (it once answered every
job 422)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import redis

from genq.contract.constants import QUEUED_COUNT, job_key
from genq.store.embedded import EmbeddedRedis, free_port
from ops.bench.api_burst import QueueReader, burst
from ops.bench.api_ceiling import BODY, QUEUE, keys_env, serve


@pytest.mark.parametrize("kind", ["genq", "genq-keys"])
def test_the_harness_api_accepts_its_jobs_as_real_ones(
    kind: str, redis_server: EmbeddedRedis, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    extra_env, headers = keys_env(tmp_path) if kind == "genq-keys" else ({}, {})
    port = free_port()
    proc = serve(kind, 1, redis_server.url, port, tmp_path / "api.log", extra_env, headers)
    try:  # serve() returned: its own first job was accepted (202)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/jobs", json=BODY, headers=headers)
        assert answer.status_code == 202, answer.text
        assert int(sync_redis.get(QUEUED_COUNT) or 0) == sync_redis.llen(QUEUE) == 2
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_burst_harness_sees_every_job_of_a_burst_land_on_the_queue(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """ops/bench/api_burst.py: each POST /generate of the burst lands on the queue once, as the
    job the API recorded (the harness reads message ids and the records' created_at)."""
    port = free_port()
    proc = serve("genq", 1, redis_server.url, port, tmp_path / "api.log", {}, {})
    reader = QueueReader(redis_server.url)
    reader.start()
    try:
        time.sleep(0.5)  # serve()'s own job is taken off
        reader.landed.clear()
        t0 = asyncio.run(burst(f"http://127.0.0.1:{port}", 20, wait_s=1.0))
        time.sleep(0.5)
        landed = dict(reader.landed)
    finally:
        reader.stopped = True
        proc.terminate()
        proc.wait(30)
    assert len(landed) == 20
    for job_id, at in landed.items():
        created = float(sync_redis.hget(job_key(job_id), "created_at"))
        assert t0 <= created <= at
