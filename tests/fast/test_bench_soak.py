"""The soak benchmark's own parts (ops/bench/soak.py, ops/bench/soak_worker.py), without a run:
its accounting, percentiles, SSE reading, webhook receiver, the Lua recount on a real Redis, the
report on a made-up run, and the fake engine it swaps in for vLLM."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter

import pytest
from redis.asyncio import Redis

from genq.contract.schemas import JobCreate, JobRecord, JobStatus
from genq.store.jobs import JobStore
from ops.bench import soak
from ops.bench.soak import (
    Job,
    Receiver,
    SseParser,
    count_runs,
    counters,
    counters_agree,
    fake_text,
    judge,
    parse_mix,
    percentile,
    plan_kinds,
    render,
    summarize,
    thirds,
)

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_mix_is_normalized_and_unknown_kinds_are_refused() -> None:
    assert parse_mix("poll=3,wait=1") == {"poll": 0.75, "wait": 0.25}
    assert sum(parse_mix(soak.DEFAULT_MIX).values()) == pytest.approx(1)
    with pytest.raises(ValueError, match="unknown job kind"):
        parse_mix("poll=1,bogus=1")
    with pytest.raises(ValueError):
        parse_mix("poll=0")


def test_the_plan_is_the_same_for_a_seed() -> None:
    mix = parse_mix(soak.DEFAULT_MIX)
    assert plan_kinds(mix, 500, 3) == plan_kinds(mix, 500, 3)
    kinds = Counter(plan_kinds(mix, 20_000, 1))
    assert 0.53 < kinds["poll"] / 20_000 < 0.57
    assert set(kinds) == set(soak.KINDS)


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_thirds_split_the_steady_span_by_time() -> None:
    samples = [{"t": float(t)} for t in range(0, 100, 2)]
    first, middle, last = thirds(samples, 40, 100)
    assert [s["t"] for s in first] == [40, 42, 44, 46, 48, 50, 52, 54, 56, 58]
    assert middle[0]["t"] == 60 and last[-1]["t"] == 98
    assert thirds(samples, 100, 100) == [[], [], []]


def test_the_engine_log_counts_each_jobs_runs() -> None:
    runs = count_runs(["S a", "E a", "S b", "A b", "S c", "E c", "S c", "E c", "", "S"])
    assert runs["a"] == Counter(S=1, E=1)
    assert runs["b"] == Counter(S=1, A=1)
    assert runs["c"]["E"] == 2
    assert set(runs) == {"a", "b", "c"}


def test_sse_events_are_read_line_by_line() -> None:
    parser = SseParser()
    stream = (
        "id: 1-0\nevent: start\ndata: {}\n\n: keep-alive\n\n"
        'id: 1-1\nevent: output\ndata: {"text": "t0 "}\n\n'
        "event: completed\ndata: {\ndata: }\n\n"
    )
    events = [e for line in stream.splitlines(keepends=True) if (e := parser.feed(line))]
    assert events == [
        ("start", "{}"),
        ("output", '{"text": "t0 "}'),
        ("completed", "{\n}"),
    ]


def finished(job: Job, status: str, **fields: object) -> dict:
    return {
        "id": job.id,
        "status": status,
        "attempts": 1,
        "started_at": "2026-01-01T00:00:00Z",
        "output": {"text": fake_text(job.tokens)} if status == "succeeded" else None,
        "error": None,
    } | fields


def test_a_job_is_judged_by_its_end_its_kind_and_its_runs() -> None:
    ok = Job(0, "poll", 0.0, tokens=3, id="a")
    assert not ok.observe({"status": "processing"}, "get", 1.0)
    assert ok.observe(finished(ok, "succeeded"), "get", 1.0)
    assert judge(ok, {"a": Counter(S=1, E=1)}) == "ok"
    assert judge(ok, {"a": Counter(S=2, E=2)}) == "twice"
    assert judge(ok, {}) == "unexpected"  # a result the engine never made

    assert judge(Job(1, "poll", 0.0, id="b"), {}) == "lost"

    late = Job(2, "cancel", 0.0, tokens=3, id="c")
    late.observe(finished(late, "succeeded"), "get", 1.0)
    assert judge(late, {"c": Counter(S=1, E=1)}) == "ok"  # the cancel came after its end

    deadline = Job(3, "deadline", 0.0, id="d")
    deadline.observe(
        finished(deadline, "canceled", started_at=None, error={"type": "deadline"}), "get", 1.0
    )
    assert judge(deadline, {}) == "ok" and not deadline.started
    canceled = Job(4, "deadline", 0.0, id="e")
    canceled.observe(finished(canceled, "canceled", error={"type": "canceled"}), "get", 1.0)
    assert judge(canceled, {}) == "unexpected"

    wrong = Job(5, "stream", 0.0, tokens=3, id="f")
    wrong.observe(finished(wrong, "succeeded", output={"text": "t0 "}), "stream", 1.0)
    assert wrong.problems == ["output"] and judge(wrong, {"f": Counter(S=1, E=1)}) == "unexpected"

    retried = Job(6, "poll", 0.0, tokens=3, id="g")
    retried.observe(finished(retried, "succeeded", attempts=2), "get", 1.0)
    assert judge(retried, {"g": Counter(S=1, E=1)}) == "twice"


def test_the_receiver_fails_at_most_max_fails_times_per_event_and_counts_duplicates() -> None:
    receiver = Receiver(SECRET, fail_rate=1.0, max_fails=2, seed=1)
    job = {"id": "a", "status": "succeeded"}
    answers = [receiver.answer("a", "completed", True, job) for _ in range(4)]
    assert answers == [500, 500, 200, 200]
    got = receiver.jobs["a"]
    assert (got.received, got.failed, got.ok) == (4, 2, 2)  # the 4th: a duplicate

    never = Receiver(SECRET, fail_rate=0.0, max_fails=2, seed=1)
    assert never.answer("b", "start", False, job) == 200  # not a completed event
    assert never.answer("b", "completed", False, job) == 200
    assert never.jobs["b"].unverified == 1 and never.events == Counter(start=1, completed=1)


def test_a_completed_event_reaches_its_job_before_or_after_it_waits() -> None:
    async def scenario() -> tuple:
        receiver = Receiver(SECRET, fail_rate=0.0, max_fails=2, seed=1)
        receiver.answer("early", "completed", True, {"id": "early", "status": "failed"})
        early = await receiver.completed("early", 1)
        waiting = asyncio.ensure_future(receiver.completed("late", 1))
        await asyncio.sleep(0.01)
        receiver.answer("late", "completed", True, {"id": "late", "status": "succeeded"})
        none = await receiver.completed("never", 0.05)
        return early, await waiting, none, receiver.waiters

    early, late, none, waiters = asyncio.run(scenario())
    assert early["status"] == "failed" and late["status"] == "succeeded"
    assert none is None and waiters == {}


def test_a_signed_delivery_is_verified() -> None:
    from genq.contract.webhooks import signed_headers

    receiver = Receiver(SECRET, fail_rate=0.0, max_fails=2, seed=1)
    body = json.dumps({"id": "a", "status": "succeeded"}).encode()
    headers = signed_headers([SECRET], "msg_a_completed", body, time.time())
    headers["genq-event"] = "completed"

    class Request:
        def __init__(self) -> None:
            self.headers = headers

        async def read(self) -> bytes:
            return body

    response = asyncio.run(receiver.handle(Request()))
    assert response.status == 200
    assert receiver.jobs["a"].unverified == 0


def _record(job_id: str, model: str | None) -> JobRecord:
    job_input = JobCreate(prompt="x").to_input()
    return JobRecord(
        id=job_id, status=JobStatus.QUEUED, created_at=time.time(), input=job_input, model=model
    )


def test_the_recount_matches_the_counters_and_skips_streams_and_lists(with_store) -> None:
    async def scenario(store: JobStore, redis: Redis) -> tuple[dict, dict]:
        for i in range(5):
            await store.create(_record(f"q{i}", soak.MODEL))
        await store.claim("q0", "w1", time.time(), lease_s=30)
        await store.transition("q1", [JobStatus.QUEUED], JobStatus.CANCELED)
        # A stream and a deliveries list beside the records: not job records.
        await redis.xadd("genq:job:q0:stream", {"e": "start"})
        await redis.rpush("genq:job:q1:deliveries", "{}")
        agreed = await counters(redis, soak.MODEL)
        await redis.set("genq:jobs:queued", 7)  # a counter gone wrong
        return agreed, await counters(redis, soak.MODEL)

    agreed, drifted = with_store(scenario)
    assert agreed == {
        "records_queued": 3,
        "records": 5,
        "counter": 3,
        "model_counter": 3,
        "waiting": 3,
        "model_waiting": 3,
    }
    assert counters_agree(agreed) and not counters_agree(drifted)


def _args(**overrides: object) -> argparse.Namespace:
    values = {
        "jobs": 20,
        "rate": 10.0,
        "tokens": 3,
        "token_s": 0.004,
        "result_ttl_s": 1,
        "stream_keep_s": 1,
    }
    return argparse.Namespace(**(values | overrides))


def _sample(t: float, memory: int) -> dict:
    return {
        "t": t,
        "sent": int(t * 10),
        "finished": int(t * 10),
        "used_memory": memory,
        "dataset": memory // 2,
        "clients_memory": 100_000,
        "connections": 12,
        "keys": 100,
        "queued_counter": 0,
        "broker_queue": 0,
        "webhooks_scheduled": 0,
        "rss_mib": {"api": 80.0, "worker": 84.0, "engine host": 54.0},
    }


def test_the_report_accounts_for_every_job_of_a_made_up_run() -> None:
    plan = [Job(i, "poll" if i % 2 else "webhook", i / 10, tokens=3) for i in range(20)]
    runs: dict[str, Counter] = {}
    receiver = Receiver(SECRET, fail_rate=0.0, max_fails=2, seed=1)
    for job in plan[:-1]:  # the last one is never seen to end
        job.id, job.sent, job.accepted, job.submit_ms = f"j{job.i}", job.due, job.due, 2.0
        job.observe(finished(job, "succeeded"), "get", job.due + 0.1)
        runs[job.id] = Counter(S=1, E=1)
        if job.kind == "webhook":
            receiver.answer(job.id, "completed", True, {})
    plan[-1].id, plan[-1].sent = "lost", plan[-1].due
    samples = [_sample(t / 2, 1_000_000 + t) for t in range(0, 40)]
    counted = {
        "records_queued": 0,
        "records": 0,
        "counter": 0,
        "model_counter": 0,
        "waiting": 0,
        "model_waiting": 0,
    }
    samples[3]["recount"] = counted
    end = _sample(20.0, 900_000) | {"recount": counted}
    end["scan"] = {"statuses": {"succeeded": 19}, "counter": 0, "model_counter": 0, "unacked": 0}
    run = {
        "samples": samples,
        "end": end,
        "load_s": 19.9,
        "all_done_s": 20.0,
        "lag_s": {"p50": 0.0, "p99": 0.001, "max": 0.002},
        "cpu": {"cores": {"api": 0.3, "worker/[genq engine ho": 0.2}, "host_busy_cores": 0.6},
        "webhooks_drained": True,
        "http_errors": Counter(),
        "receiver": receiver,
    }
    summary = summarize(_args(), plan, run, runs, [])
    assert summary["verdicts"] == {"ok": 19, "lost": 1}
    assert summary["jobs"]["webhook"]["succeeded"] == 10
    assert summary["webhooks"]["completed_received"] == 10
    assert summary["cpu_cores"]["engine host"] == 0.2
    assert summary["cpu_cores"]["not the soak's processes"] == pytest.approx(0.1)
    assert len(summary["redis"]["thirds"]) == 3
    text = render(summary)
    assert "lost" in text and "all equal" in text
    json.dumps(summary, default=str)  # --out


def test_the_fake_engine_streams_its_tokens_and_logs_each_run(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.host import runtime
    from worker.host.engine import InvalidInput, Progress

    # Importing soak_worker swaps the runtime's engine class: put it back after this test.
    monkeypatch.setattr(runtime, "Engine", runtime.Engine)
    monkeypatch.setattr(runtime, "prepare_default_model", runtime.prepare_default_model)
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", os.environ["PROMETHEUS_MULTIPROC_DIR"])
    monkeypatch.setenv("SOAK_ENGINE_DIR", str(tmp_path))
    monkeypatch.setenv("SOAK_TOKEN_S", "0.001")
    from ops.bench import soak_worker

    assert runtime.Engine is soak_worker.FakeEngine
    assert soak_worker.FAIL_MARKER == soak.FAIL_MARKER
    engine = soak_worker.FakeEngine("m", {}, max_num_seqs=4, on_stats=None)
    engine.start()
    try:
        progress = Progress()
        job = JobCreate(prompt="hello there", max_tokens=5).to_input()
        result = engine.submit(engine.generate("j1", job, progress)).result(5)
        assert result.text == fake_text(5) == "".join(progress.pieces)
        assert (result.output_tokens, result.prompt_tokens, result.finish_reason) == (
            5,
            2,
            "length",
        )
        refused = JobCreate(prompt=f"{soak.FAIL_MARKER} x", max_tokens=5).to_input()
        with pytest.raises(InvalidInput):
            engine.submit(engine.generate("j2", refused)).result(5)
        slow = JobCreate(prompt="x", max_tokens=10_000).to_input()
        running = engine.submit(engine.generate("j3", slow))
        time.sleep(0.05)
        assert engine.unfinished_requests() == 1
        running.cancel()
        time.sleep(0.05)
    finally:
        engine.stop()
    (log,) = tmp_path.glob("runs-*.log")
    assert count_runs(log.read_text().splitlines()) == {
        "j1": Counter(S=1, E=1),
        "j2": Counter(S=1),
        "j3": Counter(S=1, A=1),
    }
    reports = sorted(tmp_path.glob("host-*.json"))
    assert [json.loads(p.read_text())["phase"] for p in reports] == ["started", "stopped"]
