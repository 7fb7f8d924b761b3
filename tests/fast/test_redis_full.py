"""Redis full (maxmemory with noeviction, as every Redis genq sets up runs): against a real Redis
with a small maxmemory, the API answers 503 with Retry-After and stores nothing, every job it had
accepted is still there, and accepted jobs go on: results are stored, and a write Redis refuses
is held by the worker and made once there is room (with a FAKE engine)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from redis.asyncio import Redis

from api.app import create_app
from genq.contract.constants import QUEUED_COUNT
from genq.contract.schemas import JobCreate, JobPayload, JobRecord, JobStatus
from genq.contract.settings import ApiSettings
from genq.store.embedded import EmbeddedRedis
from genq.store.jobs import JobStore
from tests.fast.test_runner_fake_engine import FakeEngine
from worker.host.runner import RunOptions, run_job

MAXMEMORY = 4 * 2**20


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path, maxmemory=str(MAXMEMORY)).start()
    yield server
    server.stop()


def fill(client: redis.Redis) -> list[str]:
    """Redis full: its maxmemory set below anything it can hold (as when it has filled up), so
    that every write that needs memory is refused. Returns what to pass to :func:`make_room`."""
    client.config_set("maxmemory", 1)
    return [str(MAXMEMORY)]


def make_room(client: redis.Redis, saved: list[str]) -> None:
    """Room again (as results expire, or an operator gives Redis more memory)."""
    client.config_set("maxmemory", saved[0])


def test_a_full_redis_gets_503_with_retry_after_and_loses_no_accepted_job(small_redis) -> None:
    sync = redis.Redis.from_url(small_redis.url, decode_responses=True)
    with TestClient(create_app(ApiSettings(redis_url=small_redis.url))) as client:
        accepted = [client.post("/v1/jobs", json={"prompt": f"job {i}"}) for i in range(5)]
        assert {r.status_code for r in accepted} == {202}
        saved = fill(sync)
        refused = client.post("/v1/jobs", json={"prompt": "one too many"})
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["error"]["type"] == "unavailable"
        assert "maxmemory" in refused.json()["error"]["message"]
        batch = client.post("/v1/batches", json={"items": [{"prompt": "a"}, {"prompt": "b"}]})
        assert batch.status_code == 503
        # Reads still answer; every accepted job is there, still queued and counted.
        for r in accepted:
            job = client.get(f"/v1/jobs/{r.json()['id']}")
            assert job.status_code == 200 and job.json()["status"] == "queued"
        assert int(sync.get(QUEUED_COUNT)) == len(accepted)
        make_room(sync, saved)
        assert client.post("/v1/jobs", json={"prompt": "now"}).status_code == 202
    sync.close()


def test_accepted_jobs_go_on_while_redis_is_full(small_redis, caplog) -> None:
    """New work is refused when Redis is full; work already accepted goes on: a running job's
    result is stored (the first write of its step frees a lease, which Redis allows), and a job
    sent again after its worker died, whose claim Redis refuses, is held by the worker and claimed
    once there is room."""
    sync = redis.Redis.from_url(small_redis.url, decode_responses=True)

    async def scenario() -> tuple[JobStatus, JobRecord, JobStatus, JobRecord, float]:
        client = Redis.from_url(small_redis.url, decode_responses=True)
        store = JobStore(client, ttl_s=600)
        job_input = JobCreate(prompt="hello", max_tokens=8).to_input()
        created = time.time()
        for job_id in ("running", "resent"):
            await store.create(
                JobRecord(id=job_id, status=JobStatus.QUEUED, created_at=created, input=job_input)
            )
        # "resent": its worker died mid-run (its lease ended); the janitor sent it again.
        await store.claim("resent", "dead", time.time(), lease_s=0.05)
        await asyncio.sleep(0.1)
        fillers: list[str] = []

        class FillsRedisWhileRunning(FakeEngine):
            async def generate(self, request_id, job, progress=None):
                result = await super().generate(request_id, job, progress)
                fillers.extend(await asyncio.to_thread(fill, sync))
                return result

        def payload(job_id: str) -> JobPayload:
            return JobPayload(id=job_id, input=job_input, created_at=created)

        ran = await run_job(payload("running"), store, FillsRedisWhileRunning(), RunOptions("w1"))
        running = await store.get("running")

        async def make_room_later() -> float:
            await asyncio.sleep(1.5)  # the claim is refused meanwhile
            await asyncio.to_thread(make_room, sync, fillers)
            return time.time()

        room_at = asyncio.ensure_future(make_room_later())
        resent = await run_job(
            payload("resent"), store, FakeEngine(), RunOptions("w2"), claim_first=True
        )
        record = await store.get("resent")
        await client.aclose()
        return ran, running, resent, record, await room_at

    with caplog.at_level(logging.WARNING, logger="worker.host.runner"):
        ran, running, resent, record, room_at = asyncio.run(scenario())
    assert ran is JobStatus.SUCCEEDED and running.status is JobStatus.SUCCEEDED
    assert running.output.text  # stored while Redis was full
    assert resent is JobStatus.SUCCEEDED and record.status is JobStatus.SUCCEEDED
    assert (record.worker, record.attempts) == ("w2", 2)
    assert record.completed_at >= room_at  # claimed once there was room, not before
    assert any("Redis is full" in r.getMessage() for r in caplog.records)
    sync.close()
