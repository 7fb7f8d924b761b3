"""Admission in waves (worker/host/scheduler.py) on the real CPU engine, built and fed as the
worker builds and feeds it (worker/host/engine.py): a backlog of more jobs than the batch holds
is held while fewer than a wave of slots are free, then let in a wave at a time, and every job
finishes.

What happened inside the engine is read from vLLM's own per-request stats
(``RequestOutput.metrics``), in the engine core's clock: when each request reached the scheduler
(``queued_ts``), entered the batch (``scheduled_ts``, which the requests one scheduling round
admits share) and made its last token (``last_token_ts``, which the requests of one step share).

The engine runs in a pytest of its own, a child process: vLLM's AsyncLLM, stopped, leaves sockets,
ZeroMQ contexts and pending tasks behind in its process, which would warn in whichever later test
the garbage collector happened to reach them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from genq.contract.schemas import JobInput, SamplingOptions
from genq.contract.settings import WorkerSettings
from worker.host.engine import Engine, GenerationResult
from worker.model_files import prepare_default_model

pytestmark = pytest.mark.engine

IN_CHILD = "GENQ_TEST_ADMISSION_CHILD"

SLOTS = 8  # max_num_seqs
WAVE = 4
JOBS = 32
# Held for as long as it takes a wave of slots to free (not the default few steps), so that
# every admission from the backlog is a wave.
HOLD_STEPS = 1000


def length(i: int) -> int:
    """Job ``i``'s output tokens, 6 to 16 and staggered: slots free one or two a step."""
    return 6 + (i * 5) % 11


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    # Engine.start sets these for its own process; the later tests' workers get them back.
    method = "VLLM_WORKER_MULTIPROC_METHOD"
    monkeypatch.setenv(method, os.environ.get(method, "spawn"))
    model = str(prepare_default_model(WorkerSettings().cache_dir))
    engine = Engine(
        model,
        {},
        max_num_seqs=SLOTS,
        admission_wave=WAVE,
        admission_hold_steps=HOLD_STEPS,
        admission_gather_ms=0,  # the backlog rule alone
    )
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


def record_metrics(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """vLLM's stats of each request, by request id, as Engine.generate runs it (it keeps only
    the text and the counts)."""
    metrics: dict[str, Any] = {}
    generate = engine._llm.generate

    async def recording(prompt: Any, params: Any, request_id: str, **kw: Any) -> AsyncIterator:
        async for out in generate(prompt, params, request_id, **kw):
            metrics[request_id] = out.metrics
            yield out

    monkeypatch.setattr(engine._llm, "generate", recording)
    return metrics


def test_a_backlog_is_held_then_admitted_in_waves_and_every_job_finishes() -> None:
    """Runs the check below in a child pytest (see the module's docstring)."""
    if os.environ.get(IN_CHILD):
        pytest.skip("the child runs the check itself")
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::pytest.PytestUnraisableExceptionWarning",
            f"{__file__}::test_in_this_process",
        ],
        env={**os.environ, IN_CHILD: "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-3000:]
    assert "1 passed" in child.stdout, child.stdout[-2000:]


@pytest.mark.skipif(not os.environ.get(IN_CHILD), reason="run by the test above, in a child")
def test_in_this_process(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = record_metrics(engine, monkeypatch)
    jobs = {
        f"job-{i}": JobInput(
            prompt=f"Count from {i} upwards:",
            sampling=SamplingOptions(max_tokens=length(i), min_tokens=length(i)),
        )
        for i in range(JOBS)
    }

    async def run_all() -> list[GenerationResult]:  # all at once, as a worker's burst
        return await asyncio.gather(*(engine.generate(rid, job) for rid, job in jobs.items()))

    results = engine.submit(run_all()).result(timeout=120)

    # Every job finished, with the tokens it asked for.
    assert [(r.finish_reason, r.output_tokens) for r in results] == [
        ("length", job.sampling.max_tokens) for job in jobs.values()
    ]
    assert metrics.keys() == jobs.keys()

    # The admissions made once the whole backlog had reached the scheduler, in order.
    last_arrival = max(m.queued_ts for m in metrics.values())
    rounds = Counter(m.scheduled_ts for m in metrics.values() if m.scheduled_ts > last_arrival)
    admissions = sorted(rounds.items())
    assert len(admissions) >= 3, admissions  # a backlog, several batches deep

    # Waves: while the backlog outnumbered the free slots, it went in a wave or more at a time;
    # only its tail, which fit the free slots, may be smaller.
    assert all(size >= WAVE for _, size in admissions[:-1]), admissions

    # Held: between two admissions, slots freed at two or more different steps. vLLM's own
    # scheduler, scheduling synchronously as it does on CPU, refills a slot at the step after it
    # frees: between two of its admissions, every slot freed at one step.
    finish_steps_between = [
        {m.last_token_ts for m in metrics.values() if before < m.last_token_ts < at}
        for (before, _), (at, _) in zip(admissions, admissions[1:], strict=False)
    ]
    assert any(len(steps) >= 2 for steps in finish_steps_between), finish_steps_between
