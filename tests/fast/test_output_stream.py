"""A job's output stream (genq.store.streams): written by the worker's runner and OutputStreams, read
by the API's StreamReaders, against a real Redis, with a FAKE engine that streams words."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from api import job_stream
from api.job_stream import Event, StreamReaders
from genq.contract.constants import stream_key
from genq.contract.schemas import JobCreate, JobInput, JobPayload, JobRecord, JobStatus
from genq.store.jobs import JobStore, streams
from worker.host.engine import GenerationResult, Progress
from worker.host.runner import RunOptions, run_job
from worker.host.streams import OutputStreams


class FakeWordEngine:
    """Streams ``words`` words, one every ``step_s``; its result's text is what it streamed."""

    def __init__(self, words: int = 40, step_s: float = 0.005):
        self.words = words
        self.step_s = step_s

    async def generate(
        self, request_id: str, job: JobInput, progress: Progress | None = None
    ) -> GenerationResult:
        p = progress or Progress()
        for i in range(self.words):
            await asyncio.sleep(self.step_s)
            p.pieces.append(f"w{i} ")
            p.output_tokens += 1
        return p.result()


async def _queued(store: JobStore, job_id: str) -> JobPayload:
    job_input = JobCreate(prompt="hello", max_tokens=64).to_input()
    created = time.time()
    await store.create(
        JobRecord(id=job_id, status=JobStatus.QUEUED, created_at=created, input=job_input)
    )
    return JobPayload(id=job_id, input=job_input, created_at=created)


async def _collect(readers: StreamReaders, job_id: str, after: str = "0-0") -> list[Event]:
    return [e async for e in readers.follow(job_id, after) if e is not None]


def _text(events: list[Event]) -> str:
    return "".join(e.entry.text for e in events if isinstance(e.entry, streams.Output))


async def _run_streamed(store: JobStore, redis: Redis, job_id: str, engine) -> list[Event]:
    """Run the job with a live reader from before it starts; the reader's events."""
    out = OutputStreams(redis, interval_s=0.01)
    flusher = asyncio.create_task(out.run())
    payload = await _queued(store, job_id)
    reader = asyncio.create_task(_collect(StreamReaders(redis, 10), job_id))
    try:
        assert await run_job(payload, store, engine, RunOptions("w1", streams=out))
        return await asyncio.wait_for(reader, 10)
    finally:
        flusher.cancel()


def test_a_live_reader_gets_start_every_delta_in_order_then_the_end(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis):
        events = await _run_streamed(store, redis, "job1", FakeWordEngine())
        return events, await store.get("job1")

    events, record = with_store(scenario)
    kinds = [type(e.entry).__name__ for e in events]
    assert kinds[0] == "Start" and kinds[-1] == "End" and set(kinds[1:-1]) == {"Output"}
    outputs = [e.entry for e in events[1:-1]]
    # Batched by the flush interval: fewer entries than words, none lost, none repeated.
    assert 1 < len(outputs) < 40
    assert [o.index for o in outputs] == list(range(len(outputs)))
    assert _text(events) == record.output.text == "".join(f"w{i} " for i in range(40))
    assert outputs[-1].output_tokens == record.metrics.output_tokens == 40
    assert events[-1].entry == streams.End("succeeded")


def test_many_jobs_ending_while_flushes_run_keep_every_delta_in_order(with_store) -> None:
    """Each job's last delta rides on its terminal transition; with a flush every millisecond
    and 80 jobs ending at once, some flush is always on its way as a job ends: no delta is lost,
    repeated or overtaken."""

    async def scenario(store: JobStore, redis: Redis):
        out = OutputStreams(redis, interval_s=0.001)
        flusher = asyncio.create_task(out.run())
        ids = [f"job{i}" for i in range(80)]
        payloads = [await _queued(store, job_id) for job_id in ids]
        try:
            await asyncio.gather(
                *(
                    run_job(p, store, FakeWordEngine(step_s=0.001), RunOptions("w1", streams=out))
                    for p in payloads
                )
            )
        finally:
            flusher.cancel()
        readers = StreamReaders(redis, 10)
        return [(await _collect(readers, job_id), await store.get(job_id)) for job_id in ids]

    for events, record in with_store(scenario):
        outputs = [e.entry for e in events if isinstance(e.entry, streams.Output)]
        assert [o.index for o in outputs] == list(range(len(outputs)))
        assert _text(events) == record.output.text == "".join(f"w{i} " for i in range(40))
        assert events[-1].entry == streams.End("succeeded")


def test_a_late_reader_and_a_resumed_one_see_the_same_stream(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis):
        live = await _run_streamed(store, redis, "job1", FakeWordEngine())
        readers = StreamReaders(redis, 10)
        late = await _collect(readers, "job1")
        resumed = await _collect(readers, "job1", after=live[2].id)  # after the 2nd delta
        return live, late, resumed

    live, late, resumed = with_store(scenario)
    assert [(e.id, e.entry) for e in late] == [(e.id, e.entry) for e in live]
    assert [(e.id, e.entry) for e in resumed] == [(e.id, e.entry) for e in live[3:]]


def test_a_finished_jobs_stream_is_dropped_soon_and_a_later_reader_gets_the_end(
    with_store, monkeypatch
) -> None:
    """The stream is most of what a finished job costs in Redis, and its text is in the job's
    record: it is kept ``stream_keep_s`` after the end, then only the record is left. A reader
    that comes later, or that waited on the stream as it went, gets the end."""
    monkeypatch.setattr(job_stream, "KEEPALIVE_S", 0.2)

    async def scenario(_: JobStore, redis: Redis):
        store = JobStore(redis, ttl_s=600, stream_keep_s=1)
        live = await _run_streamed(store, redis, "job1", FakeWordEngine())
        ttl = await redis.ttl(stream_key("job1"))
        await asyncio.sleep(1.2)
        keys = sorted(await redis.keys("genq:job:job1*"))
        late = await _collect(StreamReaders(redis, 10), "job1")
        return live, ttl, keys, late, await store.get("job1")

    live, ttl, keys, late, record = with_store(scenario)
    assert _text(live) == record.output.text and 0 < ttl <= 1
    assert keys == ["genq:job:job1"]
    assert [e.entry for e in late] == [streams.End("succeeded")]


def test_a_delta_sent_twice_is_read_once(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis):
        key = stream_key("job1")
        await redis.xadd(key, {"e": "start", "a": 1})
        for i, text in [(0, "a"), (1, "b"), (1, "b"), (2, "c")]:  # a flush that went twice
            await redis.xadd(key, streams.output_fields(i, text, i + 1))
        await redis.xadd(key, {"e": "end", "s": "succeeded"})
        await _queued(store, "job1")
        return await _collect(StreamReaders(redis, 10), "job1")

    assert _text(with_store(scenario)) == "abc"


def test_while_a_job_runs_get_shows_its_text_so_far(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis):
        out = OutputStreams(redis, interval_s=0.01)
        flusher = asyncio.create_task(out.run())
        payload = await _queued(store, "job1")
        job = asyncio.create_task(
            run_job(payload, store, FakeWordEngine(step_s=0.02), RunOptions("w1", streams=out))
        )
        await asyncio.sleep(0.4)
        during = await store.get("job1")
        await job
        flusher.cancel()
        return during, await store.get("job1")

    during, after = with_store(scenario)
    assert during.status is JobStatus.PROCESSING
    assert 0 < during.metrics.output_tokens < 40
    assert after.output.text.startswith(during.output.text)
    assert len(during.output.text.split()) == during.metrics.output_tokens


def test_a_job_canceled_while_queued_ends_its_stream(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis):
        await _queued(store, "job1")
        reader = asyncio.create_task(_collect(StreamReaders(redis, 10), "job1"))
        await asyncio.sleep(0.05)
        await store.transition("job1", [JobStatus.QUEUED], JobStatus.CANCELED)
        return await asyncio.wait_for(reader, 5)

    assert [e.entry for e in with_store(scenario)] == [streams.End("canceled")]
