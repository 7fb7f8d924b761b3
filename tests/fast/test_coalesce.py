"""genq.store.coalesce: a burst of one script's calls goes to a real Redis in a few pipelines, in the
order the calls came, each call with its own result or error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from genq.contract.schemas import JobCreate, JobRecord, JobStatus
from genq.store.coalesce import CoalescedScript
from genq.store.embedded import EmbeddedRedis
from genq.store.jobs import JobStore, QueueFull

# Appends its argument to a list and answers with it; refuses "bad".
APPEND = """
if ARGV[1] == 'bad' then return redis.error_reply('bad input') end
redis.call('RPUSH', KEYS[1], ARGV[1])
return ARGV[1]
"""


def run(redis_server: EmbeddedRedis, fn: Callable[[Redis], Awaitable[object]]) -> object:
    async def main() -> object:
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        await redis.flushdb()
        try:
            return await fn(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


async def server_stats(redis: Redis) -> tuple[int, int]:
    """Connections the server has accepted, and EVALSHA calls it has run, so far."""
    stats = await redis.info("stats")
    calls = (await redis.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    return stats["total_connections_received"], calls


def test_a_burst_goes_out_in_a_few_pipelines_on_one_connection_in_call_order(
    redis_server: EmbeddedRedis,
) -> None:
    async def scenario(redis: Redis) -> tuple[list, list, int, int]:
        script = CoalescedScript(redis, APPEND, max_batch=100)
        await redis.ping()
        connections0, calls0 = await server_stats(redis)
        answers = await asyncio.gather(*(script(["out"], [str(i)]) for i in range(300)))
        connections1, calls1 = await server_stats(redis)
        return (
            answers,
            await redis.lrange("out", 0, -1),
            connections1 - connections0,
            calls1 - calls0,
        )

    answers, stored, new_connections, calls = run(redis_server, scenario)
    expected = [str(i) for i in range(300)]
    assert answers == expected
    assert stored == expected  # in the order the calls came
    assert calls == 300
    # One connection for the pipelines (a plain call each would have opened one per call).
    assert new_connections <= 2


def test_each_call_gets_its_own_result_or_error(redis_server: EmbeddedRedis) -> None:
    async def scenario(redis: Redis) -> tuple[list, list]:
        script = CoalescedScript(redis, APPEND)
        answers = await asyncio.gather(
            *(script(["out"], [arg]) for arg in ("a", "bad", "c")), return_exceptions=True
        )
        return answers, await redis.lrange("out", 0, -1)

    answers, stored = run(redis_server, scenario)
    assert answers[0] == "a" and answers[2] == "c"
    assert isinstance(answers[1], ResponseError) and "bad input" in str(answers[1])
    assert stored == ["a", "c"]


def test_a_call_canceled_before_its_batch_left_is_not_run(redis_server: EmbeddedRedis) -> None:
    async def scenario(redis: Redis) -> tuple[bool, str, list]:
        script = CoalescedScript(redis, APPEND)
        first = asyncio.create_task(script(["out"], ["first"]))
        second = asyncio.create_task(script(["out"], ["second"]))
        await asyncio.sleep(0)  # both have joined the batch; it has not left yet
        first.cancel()
        answer = await second
        await asyncio.gather(first, return_exceptions=True)
        return first.cancelled(), answer, await redis.lrange("out", 0, -1)

    canceled, answer, stored = run(redis_server, scenario)
    assert canceled and answer == "second"
    assert stored == ["second"]


def test_a_redis_that_is_gone_fails_every_call_of_the_batch(tmp_path) -> None:
    """Every caller sees the batch's error as its own: a request answers 503, not a hang."""
    server = EmbeddedRedis(tmp_path).start()
    url = server.url
    server.stop()

    async def scenario() -> list:
        redis = Redis.from_url(url, decode_responses=True, socket_connect_timeout=0.5)
        try:
            script = CoalescedScript(redis, APPEND)
            return await asyncio.gather(
                *(script(["out"], [str(i)]) for i in range(3)), return_exceptions=True
            )
        finally:
            await redis.aclose()

    answers = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert len(answers) == 3 and all(isinstance(a, Exception) for a in answers)


def test_the_store_creates_a_burst_with_each_job_checked_on_its_own(
    redis_server: EmbeddedRedis,
) -> None:
    """genq.store.jobs's create goes through the coalesced script: a burst past the queue's limit
    accepts exactly the limit, in order, and refuses the rest with QueueFull."""

    async def scenario(redis: Redis) -> tuple[list, list]:
        store = JobStore(redis, ttl_s=600)
        job_input = JobCreate(prompt="hello", max_tokens=8).to_input()
        records = [
            JobRecord(
                id=f"job{i}", status=JobStatus.QUEUED, created_at=time.time(), input=job_input
            )
            for i in range(5)
        ]
        outcomes = await asyncio.gather(
            *(store.create(r, max_queued=3, message=("q", r.id)) for r in records),
            return_exceptions=True,
        )
        return outcomes, await redis.lrange("q", 0, -1)

    outcomes, queue = run(redis_server, scenario)
    assert outcomes[:3] == [None, None, None]
    assert all(isinstance(o, QueueFull) for o in outcomes[3:])
    assert sorted(queue) == ["job0", "job1", "job2"]


@pytest.mark.parametrize("max_batch", [1, 7])
def test_small_batches_keep_order_too(redis_server: EmbeddedRedis, max_batch: int) -> None:
    async def scenario(redis: Redis) -> list:
        script = CoalescedScript(redis, APPEND, max_batch=max_batch)
        await asyncio.gather(*(script(["out"], [str(i)]) for i in range(20)))
        return await redis.lrange("out", 0, -1)

    assert run(redis_server, scenario) == [str(i) for i in range(20)]


def test_scripts_lost_by_redis_are_loaded_again_and_the_calls_run_once(
    redis_server: EmbeddedRedis,
) -> None:
    """A Redis restarted under a running API has no scripts: NOSCRIPT calls did not run, so they
    run again once the script is loaded; nothing runs twice."""

    async def scenario(redis: Redis) -> tuple[list, list]:
        script = CoalescedScript(redis, APPEND)
        await script(["out"], ["before"])
        await redis.script_flush()
        answers = await asyncio.gather(*(script(["out"], [str(i)]) for i in range(3)))
        return answers, await redis.lrange("out", 0, -1)

    answers, stored = run(redis_server, scenario)
    assert answers == ["0", "1", "2"]
    assert stored == ["before", "0", "1", "2"]
