"""What the API does with requests that wait for jobs when it is told to stop (api.shutdown,
api.waiter): real signals to this process, a real Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from redis.asyncio import Redis

from api.shutdown import answer_before, on_exit_signal
from api.waiter import JobWaiter
from genq.contract.schemas import JobStatus
from genq.store.jobs import JobStore
from tests.fast.test_runner_fake_engine import queued


def test_the_first_exit_signal_schedules_the_callback_and_the_servers_handler_still_runs() -> None:
    seen: list[object] = []
    server = signal.signal(signal.SIGTERM, lambda sig, _: seen.append(("server", sig)))
    loop = asyncio.new_event_loop()
    try:
        unhook = on_exit_signal(loop, lambda: seen.append("callback"))
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        loop.run_until_complete(asyncio.sleep(0.05))
        unhook()
        hooked_back = signal.getsignal(signal.SIGTERM)
    finally:
        loop.close()
        restored = signal.signal(signal.SIGTERM, server)
    # uvicorn's handler saw both signals; the callback ran once, on the loop.
    assert seen == [("server", signal.SIGTERM), ("server", signal.SIGTERM), "callback"]
    assert hooked_back is restored  # unhook put the server's handler back


def test_a_default_handler_is_left_alone() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    loop = asyncio.new_event_loop()
    try:
        unhook = on_exit_signal(loop, lambda: None)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # nothing to chain to
        unhook()
    finally:
        loop.close()
        signal.signal(signal.SIGTERM, previous)


def test_waits_are_answered_a_few_seconds_before_the_grace_ends() -> None:
    assert answer_before(30) == 25
    assert answer_before(2) == 1


def test_a_drained_waiter_ends_every_wait_with_the_record_as_it_stands(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis) -> tuple[float, JobStatus, float]:
        waiter = JobWaiter(redis, store)
        await waiter.start()
        try:
            await queued(store)
            await asyncio.sleep(0.1)  # the subscription is up
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, waiter.drain)
            t0 = time.monotonic()
            record = await waiter.wait("job1", 60)
            ended_after = time.monotonic() - t0
            t0 = time.monotonic()
            await waiter.wait("job1", 60)  # begun after the drain: at once
            return ended_after, record.status, time.monotonic() - t0
        finally:
            await waiter.stop()

    ended_after, status, second = with_store(scenario)
    assert status is JobStatus.QUEUED
    assert 0.3 <= ended_after < 5
    assert second < 1
