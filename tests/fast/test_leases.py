"""Running jobs' leases in sorted sets (genq.store.jobs): renewed by a live worker's heartbeat,
released by a worker that gives its jobs back, and taken by the janitor only once they ended, a
bounded number per call, against a real Redis."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from genq.contract.constants import LAPSED_SET, LEASES_SET
from genq.contract.schemas import JobCreate, JobRecord, JobStatus
from genq.store.jobs import JobStore


async def running(store: JobStore, n: int, worker: str, lease_s: float) -> list[str]:
    ids = [f"{worker}-{i}" for i in range(n)]
    job_input = JobCreate(prompt="x").to_input()
    for job_id in ids:
        await store.create(
            JobRecord(id=job_id, status=JobStatus.QUEUED, created_at=time.time(), input=job_input)
        )
        await store.claim(job_id, worker, time.time(), lease_s=lease_s)
    return ids


def test_the_janitor_takes_lapsed_jobs_only_a_bounded_number_at_a_time(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis) -> None:
        live = await running(store, 30, "live", lease_s=60)
        dead = await running(store, 25, "dead", lease_s=0.1)
        await asyncio.sleep(0.2)
        taken: list[str] = []
        for _ in range(3):
            batch = await store.lapsed_jobs(resend_after_s=30, limit=10)
            assert len(batch) <= 10
            taken += batch
        assert sorted(taken) == sorted(dead)  # each once, no live one
        assert await store.lapsed_jobs(resend_after_s=30) == []
        assert await redis.zcard(LEASES_SET) == len(live)
        assert await redis.zcard(LAPSED_SET) == len(dead)
        # A worker that claims a resent job takes it out of the lapsed set.
        await store.claim(dead[0], "w2", time.time(), lease_s=60)
        assert await redis.zscore(LAPSED_SET, dead[0]) is None
        assert await redis.zscore(LEASES_SET, dead[0]) is not None

    with_store(scenario)


def test_a_renewed_lease_lives_and_a_released_one_lapses_at_once(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> None:
        (kept,) = await running(store, 1, "kept", lease_s=0.3)
        (given,) = await running(store, 1, "given", lease_s=60)
        for _ in range(3):
            await asyncio.sleep(0.15)
            await store.renew_leases([kept], lease_s=0.3)
        await store.release_leases([given])
        assert await store.lapsed_jobs(resend_after_s=30) == [given]

    with_store(scenario)


def test_a_job_sent_again_and_never_claimed_is_sent_once_more(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> None:
        (job,) = await running(store, 1, "dead", lease_s=0.05)
        await asyncio.sleep(0.1)
        assert await store.lapsed_jobs(resend_after_s=1) == [job]
        assert await store.lapsed_jobs(resend_after_s=1) == []
        await asyncio.sleep(1.1)
        assert await store.lapsed_jobs(resend_after_s=1) == [job]

    with_store(scenario)


def test_an_ended_job_leaves_both_sets_and_a_renewal_does_not_bring_it_back(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis) -> None:
        (job,) = await running(store, 1, "w", lease_s=60)
        await store.transition(job, [JobStatus.PROCESSING], JobStatus.SUCCEEDED)
        await store.renew_leases([job], lease_s=60)
        assert await redis.zscore(LEASES_SET, job) is None
        assert await redis.zscore(LAPSED_SET, job) is None

    with_store(scenario)
