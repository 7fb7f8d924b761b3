"""Counters that cannot drift (genq/store/lua/waiting.lua), against a real Redis: the waiting-jobs
counters are recounted from the jobs really waiting, so a job whose record expired while it
waited (no worker for its model for a day, or its message lost) gives its place back, and a
counter set wrong is put right by the janitor's recount."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from genq.contract.constants import QUEUED_COUNT, model_queued_key
from genq.contract.schemas import JobCreate, JobRecord, JobStatus
from genq.store.jobs import JobStore, QueueFull, TransitionRefused


def record(job_id: str, model: str | None = "m") -> JobRecord:
    job_input = JobCreate(prompt="x").to_input()
    return JobRecord(
        id=job_id, status=JobStatus.QUEUED, created_at=time.time(), input=job_input, model=model
    )


def test_a_queued_job_whose_record_expired_gives_its_place_back(with_store) -> None:
    async def scenario(_: JobStore, redis: Redis) -> None:
        store = JobStore(redis, ttl_s=1)
        await store.create(record("a"), max_queued=2)
        await store.create(record("b"), max_queued=2)
        with pytest.raises(QueueFull):
            await store.create(record("c"), max_queued=2)
        # Their messages were lost: nobody claims them, and their records expire.
        await asyncio.sleep(2.1)
        assert not await redis.exists("genq:job:a")
        await store.create(record("d"), max_queued=2)
        assert await store.queued_counts(["m"]) == (1, [1])

    with_store(scenario)


def test_the_janitors_recount_puts_a_wrong_counter_right(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis) -> None:
        for i in range(3):
            await store.create(record(f"m{i}"))
        await store.create(record("other", model="n"))
        await store.create(record("none", model=None))
        await store.claim("m0", "w1", time.time(), lease_s=30)  # started: no longer waiting
        await redis.set(QUEUED_COUNT, 99)
        await redis.set(model_queued_key("m"), -4)
        assert await store.recount_waiting(["m", "n"]) == (4, [2, 1])
        assert await store.queued_counts(["m", "n"]) == (4, [2, 1])

    with_store(scenario)


def test_ended_and_canceled_jobs_leave_the_count_once(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> None:
        for i in range(4):
            await store.create(record(f"j{i}"))
        await store.transition("j0", [JobStatus.QUEUED], JobStatus.CANCELED)
        await store.claim("j1", "w1", time.time(), lease_s=30)
        await store.transition("j1", [JobStatus.PROCESSING], JobStatus.SUCCEEDED)
        # A message delivered twice: the second claim is refused and counts nothing.
        await store.claim("j2", "w1", time.time(), lease_s=30)
        with pytest.raises(TransitionRefused):
            await store.claim("j2", "w2", time.time(), lease_s=30)
        assert await store.queued_counts(["m"]) == (1, [1])
        assert await store.recount_waiting(["m"]) == (1, [1])

    with_store(scenario)
