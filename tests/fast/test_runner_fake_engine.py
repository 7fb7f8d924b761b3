"""The job path (store + runner + waiter) against a real Redis, with a FAKE engine.

The fake engine stands in for vLLM only here, in the fast tier; every failure mode it plays
(refused input, crash mid-job) is a fixture of its own. The real engine is tested in tests/e2e.
"""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from api.waiter import JobWaiter
from genq.contract.constants import QUEUED_COUNT
from genq.contract.schemas import JobCreate, JobInput, JobPayload, JobRecord, JobStatus
from genq.store import streams
from genq.store.jobs import JobStore, QueueFull, TransitionRefused
from worker.host.engine import EngineStats, GenerationResult, InvalidInput, Progress, Resume
from worker.host.metrics import WorkerMetrics
from worker.host.runner import RunningJob, RunOptions, run_job

T = TypeVar("T")


class FakeEngine:
    """Answers every request with a fixed text, or raises what it was given. With ``tokens``,
    it streams one token every 10 ms into the progress (to be canceled mid-job)."""

    def __init__(self, error: Exception | None = None, tokens: int = 0):
        self.error = error
        self.tokens = tokens
        self.calls: list[str] = []
        self.aborted: list[str] = []

    async def generate(
        self, request_id: str, job: JobInput, progress: Progress | None = None
    ) -> GenerationResult:
        self.calls.append(request_id)
        p = progress or Progress()
        p.prompt_tokens = 3
        try:
            for _ in range(self.tokens):
                await asyncio.sleep(0.01)
                p.pieces.append("tok ")
                p.output_tokens += 1
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.aborted.append(request_id)
            raise
        if self.error is not None:
            raise self.error
        return GenerationResult(
            text="fake text",
            finish_reason="stop",
            prompt_tokens=3,
            output_tokens=4,
            ttft_s=0.002,
            generation_s=0.01,
        )


async def queued(store: JobStore, job_id: str = "job1") -> JobPayload:
    job_input = JobCreate(prompt="hello", max_tokens=8).to_input()
    created = time.time()
    await store.create(
        JobRecord(id=job_id, status=JobStatus.QUEUED, created_at=created, input=job_input)
    )
    return JobPayload(id=job_id, input=job_input, created_at=created)


def test_a_job_runs_and_its_result_and_latencies_are_stored(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis) -> JobRecord:
        payload = await queued(store)
        assert await run_job(payload, store, FakeEngine(), RunOptions("w1")) is JobStatus.SUCCEEDED
        assert await redis.ttl("genq:job:job1") > 0
        return await store.get("job1")

    record = with_store(scenario)
    assert record.status is JobStatus.SUCCEEDED
    assert record.output.text == "fake text" and record.output.finish_reason == "stop"
    assert record.worker == "w1"
    assert record.created_at <= record.started_at <= record.completed_at
    m = record.metrics
    assert (m.prompt_tokens, m.output_tokens, m.ttft_ms, m.generation_ms) == (3, 4, 2.0, 10.0)
    assert m.tokens_per_s == 400.0
    assert m.queue_ms >= 0 and m.total_ms >= m.queue_ms


def test_input_the_engine_refuses_fails_the_job_readably(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> JobRecord:
        payload = await queued(store)
        engine = FakeEngine(InvalidInput("prompt has 9000 tokens; the model takes 8192"))
        assert await run_job(payload, store, engine, RunOptions("w1")) is JobStatus.FAILED
        return await store.get("job1")

    record = with_store(scenario)
    assert record.status is JobStatus.FAILED
    assert record.error.type == "invalid_input"
    assert "8192" in record.error.message
    assert record.completed_at is not None and record.output is None


def test_an_engine_crash_mid_job_fails_the_job_readably(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> JobRecord:
        payload = await queued(store)
        assert (
            await run_job(payload, store, FakeEngine(RuntimeError("boom")), RunOptions("w1"))
            is JobStatus.FAILED
        )
        return await store.get("job1")

    record = with_store(scenario)
    assert record.error.type == "engine_error"
    assert record.error.message == "RuntimeError: boom"


def test_a_job_that_already_left_the_queue_is_not_run_again(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> tuple[FakeEngine, JobStatus, JobStatus]:
        payload = await queued(store)
        engine = FakeEngine()
        first = await run_job(payload, store, engine, RunOptions("w1"))
        # A message kombu restored, or a janitor resent: claimed before the engine sees it.
        again = await run_job(payload, store, engine, RunOptions("w2"), claim_first=True)
        return engine, first, again

    engine, first, again = with_store(scenario)
    assert engine.calls == ["job1"] and engine.aborted == []
    assert first is JobStatus.SUCCEEDED and again is JobStatus.SUCCEEDED


def test_a_first_delivery_starts_at_once_and_is_aborted_if_the_claim_is_refused(
    with_store,
) -> None:
    """A first delivery goes to the engine as its claim is sent; a copy of a job another worker
    runs (or one canceled while queued) is aborted there, and its record is left as it was."""

    async def scenario(store: JobStore, _: Redis) -> tuple[FakeEngine, JobStatus, JobRecord]:
        payload = await queued(store)
        await store.claim("job1", "w1", time.time(), lease_s=30)
        engine = FakeEngine(tokens=1000)
        status = await run_job(payload, store, engine, RunOptions("w2"))
        return engine, status, await store.get("job1")

    engine, status, record = with_store(scenario)
    assert engine.calls == ["job1"] and engine.aborted == ["job1"]
    assert status is JobStatus.PROCESSING
    assert (record.status, record.worker, record.attempts) == (JobStatus.PROCESSING, "w1", 1)
    assert record.output is None


def test_transitions_are_checked_and_a_missing_job_is_refused(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> None:
        await queued(store)
        with pytest.raises(TransitionRefused) as refused:
            await store.transition("job1", [JobStatus.PROCESSING], JobStatus.SUCCEEDED)
        assert refused.value.current is JobStatus.QUEUED
        with pytest.raises(TransitionRefused) as missing:
            await store.transition("nope", [JobStatus.QUEUED], JobStatus.PROCESSING)
        assert missing.value.current is None

    with_store(scenario)


def test_the_waiter_wakes_when_the_job_finishes_and_times_out_otherwise(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis) -> tuple[float, JobStatus, JobStatus]:
        waiter = JobWaiter(redis, store)
        await waiter.start()
        try:
            payload = await queued(store)
            await queued(store, "never")
            await asyncio.sleep(0.1)  # the subscription is up

            async def finish_later() -> None:
                await asyncio.sleep(0.3)
                await run_job(payload, store, FakeEngine(), RunOptions("w1"))

            t0 = time.monotonic()
            _, done = await asyncio.gather(finish_later(), waiter.wait("job1", 10))
            woke_after = time.monotonic() - t0
            still = await waiter.wait("never", 0.2)
            return woke_after, done.status, still.status
        finally:
            await waiter.stop()

    woke_after, done, still = with_store(scenario)
    assert done is JobStatus.SUCCEEDED
    assert 0.3 <= woke_after < 2.0
    assert still is JobStatus.QUEUED


class CountingStore(JobStore):
    """A real store that counts its record reads."""

    reads = 0

    async def get(self, job_id: str) -> JobRecord | None:
        self.reads += 1
        return await super().get(job_id)


def test_the_waiter_answers_from_the_done_message_without_reading_the_record_again(
    with_store,
) -> None:
    """The terminal transition publishes the record with the job id: a waiter has the same
    record a read would give, and reads only once, before it starts waiting."""

    async def scenario(store: JobStore, redis: Redis) -> tuple[JobRecord, JobRecord, int]:
        counting = CountingStore(redis, store.ttl_s)
        waiter = JobWaiter(redis, counting)
        await waiter.start()
        try:
            payload = await queued(store)
            await asyncio.sleep(0.1)  # the subscription is up

            async def finish_later() -> None:
                await asyncio.sleep(0.2)
                await run_job(payload, store, FakeEngine(), RunOptions("w1"))

            _, done = await asyncio.gather(finish_later(), waiter.wait("job1", 10))
            return done, await store.get("job1"), counting.reads
        finally:
            await waiter.stop()

    done, read, reads = with_store(scenario)
    assert done.status is JobStatus.SUCCEEDED and done.output.text == "fake text"
    assert done == read
    assert reads == 1


def test_a_wait_expected_before_the_create_reads_nothing_even_for_a_job_already_ended(
    with_store,
) -> None:
    """api.waiter ``expecting``: watched from before the job exists, its end is caught from the
    done message even when it comes before the wait begins; only a wait that times out reads."""

    async def scenario(store: JobStore, redis: Redis) -> tuple[JobRecord, int, JobRecord, int]:
        counting = CountingStore(redis, store.ttl_s)
        waiter = JobWaiter(redis, counting)
        await waiter.start()
        try:
            await asyncio.sleep(0.1)  # the subscription is up
            with waiter.expecting("job1") as expected:
                payload = await queued(store)
                await run_job(payload, store, FakeEngine(), RunOptions("w1"))
                await asyncio.sleep(0.1)  # its done message arrives before the wait
                done = await waiter.wait("job1", 10, expected)
            reads_done = counting.reads
            with waiter.expecting("never") as expected:
                await queued(store, "never")
                still = await waiter.wait("never", 0.2, expected)
            return done, reads_done, still, counting.reads - reads_done
        finally:
            await waiter.stop()

    done, reads_done, still, reads_timeout = with_store(scenario)
    assert done.status is JobStatus.SUCCEEDED and done.output.text == "fake text"
    assert reads_done == 0
    assert still.status is JobStatus.QUEUED and reads_timeout == 1


def test_a_running_job_canceled_keeps_its_partial_output(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> tuple[JobStatus, JobRecord]:
        payload = await queued(store)
        running: dict[str, RunningJob] = {}
        job = asyncio.create_task(
            run_job(payload, store, FakeEngine(tokens=1000), RunOptions("w1"), running)
        )
        await asyncio.sleep(0.2)
        running["job1"].cancel("canceled")
        status = await job
        assert running == {}
        return status, await store.get("job1")

    status, record = with_store(scenario)
    assert status is JobStatus.CANCELED and record.status is JobStatus.CANCELED
    assert record.error.type == "canceled"
    assert record.output.finish_reason == "abort"
    assert 1 <= record.metrics.output_tokens < 1000
    assert record.output.text == "tok " * record.metrics.output_tokens


def test_the_queued_count_follows_the_jobs(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis) -> list[int]:
        counts = []
        first = await queued(store, "a")
        await queued(store, "b")
        counts.append((await store.queued_counts())[0])
        # a: queued -> processing -> succeeded
        await run_job(first, store, FakeEngine(), RunOptions("w1"))
        counts.append((await store.queued_counts())[0])
        await store.transition("b", [JobStatus.QUEUED], JobStatus.CANCELED)
        counts.append(int(await redis.get(QUEUED_COUNT)))
        return counts

    assert with_store(scenario) == [2, 1, 0]


def test_an_idempotency_key_creates_one_job(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> tuple[list[str | None], int]:
        job_input = JobCreate(prompt="x").to_input()

        async def create(job_id: str) -> str | None:
            record = JobRecord(id=job_id, status=JobStatus.QUEUED, created_at=1.0, input=job_input)
            return await store.create(record, ("genq:idem:k1", f'{{"id": "{job_id}"}}'))

        results = await asyncio.gather(*(create(f"j{i}") for i in range(10)))
        return results, (await store.queued_counts())[0]

    results, count = with_store(scenario)
    assert results.count(None) == 1  # exactly one created
    (winner,) = [f"j{i}" for i, r in enumerate(results) if r is None]
    assert {r for r in results if r is not None} == {f'{{"id": "{winner}"}}'}
    assert count == 1


def test_deadlines_cancel_a_late_job_unrun_and_abort_a_running_one(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> tuple[JobRecord, JobRecord, list[str]]:
        engine = FakeEngine(tokens=1000)
        late = await queued(store, "late")
        late.input.deadline_s = 0.05
        await asyncio.sleep(0.1)
        await run_job(late, store, engine, RunOptions("w1"))
        slow = await queued(store, "slow")
        slow.input.deadline_s = 0.3
        await run_job(slow, store, engine, RunOptions("w1"))
        return await store.get("late"), await store.get("slow"), engine.calls

    late, slow, calls = with_store(scenario)
    assert calls == ["slow"]
    assert late.status is JobStatus.CANCELED and late.error.type == "deadline"
    assert late.started_at is None and "not started within" in late.error.message
    assert slow.status is JobStatus.CANCELED and slow.error.type == "deadline"
    assert slow.error.message == "reached its deadline while running"
    assert 0 < slow.metrics.output_tokens < 1000


def test_the_hard_job_limit_aborts_a_job(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> JobRecord:
        payload = await queued(store)
        await run_job(payload, store, FakeEngine(tokens=1000), RunOptions("w1", max_job_s=0.2))
        return await store.get("job1")

    record = with_store(scenario)
    assert record.status is JobStatus.CANCELED and record.error.type == "deadline"


def test_a_job_whose_worker_died_is_found_claimed_again_and_counted(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> None:
        payload = await queued(store)
        assert await store.claim("job1", "dead", time.time(), lease_s=0.2) == 1
        # While the lease lives, no one else may take it, and the janitor leaves it alone.
        with pytest.raises(TransitionRefused):
            await store.claim("job1", "w2", time.time(), lease_s=5)
        assert await store.lapsed_jobs(resend_after_s=10) == []
        await asyncio.sleep(0.3)
        assert await store.lapsed_jobs(resend_after_s=10) == ["job1"]
        assert await store.lapsed_jobs(resend_after_s=10) == []  # resent once
        status = await run_job(payload, store, FakeEngine(), RunOptions("w2"))
        assert status is JobStatus.SUCCEEDED
        record = await store.get("job1")
        assert (record.worker, record.attempts) == ("w2", 2)
        # The dead worker, were it only stalled, cannot overwrite the result.
        with pytest.raises(TransitionRefused):
            await store.transition("job1", [JobStatus.PROCESSING], JobStatus.FAILED, owner="dead")

    with_store(scenario)


def test_a_job_that_keeps_killing_its_worker_is_failed(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> JobRecord:
        payload = await queued(store)
        for _ in range(2):
            await store.claim("job1", "dead", time.time(), lease_s=0.05)
            await asyncio.sleep(0.1)
        engine = FakeEngine()
        # The janitor resends it (JobPayload.resent): the claim comes first, the engine never
        # sees it.
        assert (
            await run_job(
                payload, store, engine, RunOptions("w3", max_attempts=2), claim_first=True
            )
            is JobStatus.FAILED
        )
        assert engine.calls == []
        return await store.get("job1")

    record = with_store(scenario)
    assert record.error.type == "worker_lost" and record.attempts == 3


def test_a_full_queue_refuses_new_jobs_but_replays_an_idempotency_key(with_store) -> None:
    async def scenario(store: JobStore, _: Redis) -> None:
        job_input = JobCreate(prompt="x").to_input()

        def record(job_id: str) -> JobRecord:
            return JobRecord(id=job_id, status=JobStatus.QUEUED, created_at=1.0, input=job_input)

        assert await store.create(record("a"), ("genq:idem:a", "first"), max_queued=2) is None
        assert await store.create(record("b"), max_queued=2) is None
        with pytest.raises(QueueFull) as full:
            await store.create(record("c"), max_queued=2)
        assert full.value.waiting == 2
        assert await store.get("c") is None
        # The first request again: its job, not a 429.
        assert await store.create(record("d"), ("genq:idem:a", "again"), max_queued=2) == "first"
        assert (await store.queued_counts())[0] == 2

    with_store(scenario)


def test_jobs_started_before_the_first_one_ended_are_marked_first_batch(with_store) -> None:
    """Two jobs that start together share the worker's first batch; one started after either
    ended does not (the record says which users met a fresh engine)."""

    async def scenario(store: JobStore, redis: Redis) -> list[JobRecord]:
        options = RunOptions("w1")
        first, second, third = [await queued(store, f"job{i}") for i in (1, 2, 3)]
        await asyncio.gather(
            run_job(first, store, FakeEngine(), options),
            run_job(second, store, FakeEngine(), options),
        )
        await run_job(third, store, FakeEngine(), options)
        assert options.first_batch.first_started_at is not None
        return [await store.get(f"job{i}") for i in (1, 2, 3)]

    records = with_store(scenario)
    assert [r.metrics.first_batch for r in records] == [True, True, False]
    assert all(r.status is JobStatus.SUCCEEDED for r in records)


# -- the worker's job metrics (worker.host.metrics), fed by the runner ----------------------------


def test_jobs_count_once_by_status_with_their_latencies_and_tokens(with_store) -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    options = RunOptions("w1", on_end=metrics.job_ended)

    async def scenario(store: JobStore, _: Redis) -> None:
        ok = await queued(store, "ok")
        assert await run_job(ok, store, FakeEngine(), options) is JobStatus.SUCCEEDED
        await run_job(ok, store, FakeEngine(), RunOptions("w2", on_end=metrics.job_ended))
        bad = await queued(store, "bad")
        assert await run_job(bad, store, FakeEngine(InvalidInput("no")), options) is (
            JobStatus.FAILED
        )

    with_store(scenario)
    value = registry.get_sample_value
    assert value("genq_jobs_total", {"status": "succeeded"}) == 1
    assert value("genq_jobs_total", {"status": "failed"}) == 1
    assert value("genq_jobs_total", {"status": "canceled"}) == 0
    assert value("genq_queue_wait_seconds_count") == 2
    assert value("genq_job_duration_seconds_count") == 2
    assert value("genq_time_to_first_token_seconds_count") == 1  # the failed job had no token
    assert value("genq_time_to_first_token_seconds_sum") == 0.002
    assert value("genq_output_tokens_total") == 4


def test_engine_stats_set_the_engine_gauges() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.engine_stats(EngineStats(running=3, waiting=2, kv_cache_usage=0.25))
    metrics.engine_stats(EngineStats(running=1, waiting=0, kv_cache_usage=None))
    assert registry.get_sample_value("genq_engine_running_requests") == 1
    assert registry.get_sample_value("genq_engine_waiting_requests") == 0
    assert registry.get_sample_value("genq_kv_cache_usage_ratio") == 0.25  # kept when unknown


class ResumingFakeEngine(FakeEngine):
    """FAKE engine that records what each run was asked to go on from."""

    def __init__(self) -> None:
        super().__init__()
        self.resumed: list[Resume | None] = []

    async def generate(
        self,
        request_id: str,
        job: JobInput,
        progress: Progress | None = None,
        resume: Resume | None = None,
    ) -> GenerationResult:
        self.resumed.append(resume)
        return await super().generate(request_id, job, progress)


async def _lost_mid_job(store: JobStore, redis: Redis, job: JobCreate) -> JobPayload:
    """A job whose first worker made 3 tokens (in two deltas, one of them sent twice) and died."""
    created = time.time()
    job_input = job.to_input()
    await store.create(
        JobRecord(id="job1", status=JobStatus.QUEUED, created_at=created, input=job_input)
    )
    await store.claim("job1", "dead", time.time(), lease_s=0.01)
    key = "genq:job:job1:stream"
    await redis.xadd(key, streams.output_fields(0, "Once", 1, [101]))
    await redis.xadd(key, streams.output_fields(1, " upon a", 3, [102, 103]))
    await redis.xadd(key, streams.output_fields(1, " upon a", 3, [102, 103]))
    await asyncio.sleep(0.05)
    return JobPayload(id="job1", input=job_input, created_at=created, resent=True)


@pytest.mark.parametrize(
    ("job", "resume", "expect"),
    [
        (JobCreate(prompt="hi", max_tokens=8), True, ("Once upon a", [101, 102, 103], 2)),
        (JobCreate(prompt="hi", max_tokens=8), False, None),  # GENQ_RESUME=false
        (JobCreate(prompt="hi", max_tokens=8, choice=["a", "b"]), True, None),
        (JobCreate(prompt="hi", max_tokens=8, n=2), True, None),
        (JobCreate(prompt="hi", max_tokens=8, logprobs=1), True, None),
        (JobCreate(prompt="hi", max_tokens=3), True, None),  # nothing left to make
    ],
)
def test_a_lost_job_resumes_from_its_stream_where_it_can(with_store, job, resume, expect) -> None:
    async def scenario(store: JobStore, redis: Redis) -> None:
        payload = await _lost_mid_job(store, redis, job)
        engine = ResumingFakeEngine()
        options = RunOptions("w2", resume=resume)
        assert await run_job(payload, store, engine, options, claim_first=True) is (
            JobStatus.SUCCEEDED
        )
        (asked,) = engine.resumed
        record = await store.get("job1")
        assert record.attempts == 2
        entries = [streams.decode(f) for _, f in await redis.xrange("genq:job:job1:stream")]
        (second_start,) = [e for e in entries if isinstance(e, streams.Start) and e.attempt == 2]
        if expect is None:
            assert asked is None and record.resumed_at_token is None
            assert second_start.resumed_at == 0
        else:
            text, ids, next_index = expect
            assert (asked.text, asked.token_ids, asked.next_index) == (text, ids, next_index)
            assert record.resumed_at_token == len(ids) == second_start.resumed_at

    with_store(scenario)


def test_a_run_so_far_follows_resumes_and_resets_on_a_fresh_start() -> None:
    run = streams.RunSoFar()
    for entry in [
        streams.Start(1),
        streams.Output(0, "a", 1, "1"),
        streams.Start(2, resumed_at=1),
        streams.Output(1, "b", 2, "2"),
    ]:
        run.add(entry)
    assert (run.text, run.token_ids, run.next_index, run.complete_ids) == ("ab", [1, 2], 2, True)
    run.add(streams.Start(3))
    assert (run.text, run.output_tokens, run.next_index) == ("", 0, 0)
    run.add(streams.Output(0, "x", 1))  # a run's last delta carries no ids
    assert not run.complete_ids
