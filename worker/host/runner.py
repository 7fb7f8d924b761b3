"""One job, start to end: claim it, run it on the engine, store the result.

The claim and the engine request go out together (a first delivery; one sent again after its
worker died is claimed first), and the result is one Redis step: the least round trips between a
job's message and its answer (``ops/bench/overhead.py`` measures what is left).

Runs as a coroutine on the engine's event loop (the Celery task thread only waits for it), so the
Redis writes and the engine calls of every job share one loop and one connection pool. While it
runs, a job is listed in ``running``: a cancel request finds it there and cancels its engine task,
which aborts the request inside vLLM; the job then ends ``canceled`` with the output it had.

Webhooks: a job that wants ``start`` has it scheduled once claimed; one that wants ``output`` has
its partial output written to its record and an ``output`` event scheduled at most every
``OUTPUT_EVENT_INTERVAL_S`` while it generates (both best-effort); ``completed`` is scheduled by
the terminal transition itself (genq.store.jobs). The webhooks process sends them (genq.webhooks.sender).

Streams: while it generates, a job's text goes to its output stream (worker.host.streams); its last
delta is written by the terminal transition, just before the stream's end.

Resuming: a job sent again after its worker died goes on from the output its stream kept (text
and token ids), instead of from nothing: the prompt's tokens and that output are the new run's
prompt, its token budget what is left (worker.host.engine.resumed_options). A greedy job ends
with the text an uninterrupted run gives; a sampled one with a different draw after the point it
resumed at. Jobs whose output cannot be continued token for token start over: structured output
(the grammar's state is not in the stream), ``n`` > 1 and logprobs (only the first completion's
text is). ``GENQ_RESUME=false`` makes every job start over.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from redis.exceptions import OutOfMemoryError

from genq.contract.schemas import (
    Completion,
    JobError,
    JobInput,
    JobMetrics,
    JobOutput,
    JobPayload,
    JobStatus,
)
from genq.contract.webhooks import OUTPUT_EVENT_INTERVAL_S, Delivery, webhook_id
from genq.store.jobs import JobStore, TransitionRefused
from worker.host.engine import EngineFailed, GenerationResult, InvalidInput, Progress, Resume
from worker.host.streams import OutputStreams

log = logging.getLogger(__name__)


class GeneratingEngine(Protocol):
    async def generate(
        self,
        request_id: str,
        job: JobInput,
        progress: Progress | None = None,
        resume: Resume | None = None,
    ) -> GenerationResult: ...


@dataclass
class RunningJob:
    progress: Progress = field(default_factory=Progress)
    task: asyncio.Future[GenerationResult] | None = None
    cancel_reason: str | None = None
    claimed: bool = False  # this worker holds the job's lease

    def cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        if self.task is not None:
            self.task.cancel()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _metrics(
    payload: JobPayload,
    queue_ms: float | None,
    result: GenerationResult | None,
    completed_at: float,
    first_batch: bool,
) -> JobMetrics:
    metrics = JobMetrics(
        queue_ms=queue_ms,
        total_ms=_ms(completed_at - payload.created_at),
        first_batch=first_batch,
    )
    if result is not None:
        metrics.ttft_ms = _ms(result.ttft_s)
        metrics.generation_ms = _ms(result.generation_s)
        metrics.prompt_tokens = result.prompt_tokens
        metrics.output_tokens = result.output_tokens
        if result.generation_s > 0:  # the tokens made in this run
            made = result.output_tokens - result.resumed_at
            metrics.tokens_per_s = round(made / result.generation_s, 2)
    return metrics


def _parsed(text: str, job: JobInput) -> object:
    """A json_schema job's text as JSON (None for other jobs, or text cut short)."""
    if job.sampling.json_schema is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def job_output(result: GenerationResult, job: JobInput) -> JobOutput:
    """The record's ``output`` for an engine result."""
    completions = [
        Completion(
            index=c.index,
            text=c.text,
            finish_reason=c.finish_reason,
            json_value=_parsed(c.text, job),
            logprobs=c.logprobs,
        )
        for c in result.completions
    ]
    first = completions[0] if completions else None
    return JobOutput(
        text=result.text,
        finish_reason=result.finish_reason,
        json_value=first.json_value if first else _parsed(result.text, job),
        logprobs=first.logprobs if first else None,
        choices=completions if len(completions) > 1 else None,
        prompt_format=result.prompt_format,  # type: ignore[arg-type]
    )


def resumable(job: JobInput) -> bool:
    """Whether a lost run of the job can be continued token for token (runner's docstring)."""
    options = job.sampling
    return not options.structure() and options.n == 1 and options.logprobs is None


REQUEUE = "requeue"  # the cancel reason that hands a running job back instead of ending it
# Redis full: a claim or a result is written again after this long, doubling up to the most.
FULL_RETRY_FIRST_S = 0.5
FULL_RETRY_MAX_S = 10.0
T = TypeVar("T")


@dataclass
class FirstBatch:
    """A worker's first batch: the jobs it starts before it has finished any. Their records say
    so (``metrics.first_batch``), to show whether the first users after a start pay more."""

    open: bool = True
    first_started_at: float | None = None

    def join(self, started_at: float) -> bool:
        if self.first_started_at is None:
            self.first_started_at = started_at
        return self.open


@dataclass(frozen=True)
class JobEnd:
    """How a job this worker ended went (for the worker's metrics): no id, no text."""

    status: JobStatus
    queue_s: float  # accepted -> started here
    run_s: float | None  # claimed -> ended (None: ended unrun, past its deadline)
    ttft_s: float | None  # engine submit -> first token (None: no token)
    output_tokens: int


@dataclass
class RunOptions:
    worker: str
    lease_s: float = 30.0  # a job's lease; the worker's heartbeat renews it well before then
    max_job_s: float | None = None  # hard limit on one run
    max_attempts: int = 2  # starts after which a job whose worker keeps dying is failed
    first_batch: FirstBatch = field(default_factory=FirstBatch)
    # Told of each job that ends here, once its record says so (on the engine loop).
    on_end: Callable[[JobEnd], None] | None = None
    # Publishes running jobs' text to their output streams (None: only start and end are).
    streams: OutputStreams | None = None
    # A job sent again after its worker died goes on from the output its stream kept.
    resume: bool = True


async def run_job(
    payload: JobPayload,
    store: JobStore,
    engine: GeneratingEngine,
    options: RunOptions,
    running: dict[str, RunningJob] | None = None,
    claim_first: bool = False,
) -> JobStatus:
    """Returns the status the job ended in (or had, if another worker or a cancel got there
    first). A job past its deadline is canceled unrun; a running one is aborted at its deadline
    or after ``max_job_s``, whichever comes first. The engine starts on a job as its claim is
    sent, unless ``claim_first``: a job delivered again after its worker died may be one that
    kills engines, and only the claim counts its starts (``max_attempts``)."""
    running = {} if running is None else running
    entry = running[payload.id] = RunningJob()
    max_job_s = options.max_job_s
    limit_s = [max_job_s] if max_job_s is not None else []
    if payload.input.deadline_s is not None:
        limit_s.append(payload.created_at + payload.input.deadline_s - time.time())
    timer = None
    if limit_s:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(max(0.0, min(limit_s)), entry.cancel, "deadline")
    try:
        return await _run(payload, store, engine, options, entry, claim_first)
    finally:
        if entry.claimed:
            options.first_batch.open = False
        if options.streams is not None:
            options.streams.forget(payload.id)
        running.pop(payload.id, None)
        if timer is not None:
            timer.cancel()


async def _run(
    payload: JobPayload,
    store: JobStore,
    engine: GeneratingEngine,
    options: RunOptions,
    entry: RunningJob,
    claim_first: bool,
) -> JobStatus:
    started_at = time.time()
    deadline = payload.input.deadline_s
    if deadline is not None and started_at > payload.created_at + deadline:
        try:
            await store.transition(
                payload.id,
                [JobStatus.QUEUED],
                JobStatus.CANCELED,
                {
                    "completed_at": started_at,
                    "error": JobError(
                        type="deadline",
                        message=f"not started within its deadline of {deadline:g} s",
                    ).model_dump(),
                },
            )
        except TransitionRefused as refused:
            return refused.current or JobStatus.FAILED
        _tell(options, JobEnd(JobStatus.CANCELED, started_at - payload.created_at, None, None, 0))
        return JobStatus.CANCELED
    resume = await _resume_point(payload, store, options) if claim_first else None
    resumed_at = len(resume.token_ids) if resume is not None else 0
    claim = asyncio.ensure_future(
        while_redis_full(
            f"job {payload.id}: claim",
            lambda: store.claim(
                payload.id, options.worker, started_at, options.lease_s, resumed_at
            ),
        )
    )
    if not claim_first:
        # A first delivery: the engine starts on it while Redis confirms the claim (one round
        # trip less before its first token); a job that is not ours after all is aborted there.
        entry.task = asyncio.ensure_future(
            engine.generate(payload.id, payload.input, entry.progress)
        )
    try:
        attempts = await claim
    except TransitionRefused as refused:
        # Canceled while queued, expired, run by a live worker, or a redelivery of a job that
        # already ran: skip it.
        await _abandon(entry.task)
        log.info("job %s not started: it is %s", payload.id, refused.current or "unknown")
        return refused.current or JobStatus.FAILED
    except BaseException:
        await _abandon(entry.task)
        raise
    entry.claimed = True
    first_batch = options.first_batch.join(started_at)
    if payload.wants("start"):
        await _schedule(store, Delivery(payload.id, "start", webhook_id(payload.id, "start")))

    end = functools.partial(_end, store, payload, options, first_batch, started_at)
    queue_ms = _ms(started_at - payload.created_at)
    if attempts > options.max_attempts or entry.cancel_reason is not None:
        await _abandon(entry.task)
    if attempts > options.max_attempts:
        return await end(
            JobStatus.FAILED,
            queue_ms,
            None,
            JobError(
                type="worker_lost",
                message=f"its worker died each of the {attempts - 1} times it ran; not retried again",
            ),
        )
    if entry.cancel_reason is not None:  # canceled between the claim and here
        return await end(
            JobStatus.CANCELED,
            queue_ms,
            None,
            JobError(type=entry.cancel_reason, message=_why(entry, ran=False)),
        )
    if entry.task is None:
        entry.task = asyncio.ensure_future(
            engine.generate(payload.id, payload.input, entry.progress, resume)
            if resume is not None
            else engine.generate(payload.id, payload.input, entry.progress)
        )
    if options.streams is not None:
        options.streams.watch(payload.id, entry.progress, resume)
    streamer = None
    if payload.wants("output"):
        streamer = asyncio.ensure_future(
            _output_events(payload.id, store, options.worker, entry.progress)
        )
    try:
        try:
            result = await entry.task
        finally:
            if streamer is not None:
                streamer.cancel()
    except asyncio.CancelledError:
        if entry.cancel_reason is None or not entry.task.cancelled():
            raise  # the worker itself is shutting down
        if entry.cancel_reason == REQUEUE:
            # The worker is leaving: give the job back (a live worker's janitor resends it).
            await store.release_leases([payload.id])
            return JobStatus.PROCESSING
        partial = entry.progress.result()
        partial.finish_reason = "abort"
        return await end(
            JobStatus.CANCELED,
            queue_ms,
            partial,
            JobError(type=entry.cancel_reason, message=_why(entry, ran=True)),
        )
    except InvalidInput as exc:
        return await end(
            JobStatus.FAILED, queue_ms, None, JobError(type="invalid_input", message=str(exc))
        )
    except EngineFailed:
        # Not the job's fault: leave it "processing". The worker exits and gives up its leases,
        # so another worker runs the job again (and fails it if it keeps killing engines).
        raise
    except Exception as exc:  # noqa: BLE001 - a job that cannot run ends failed, readably
        log.exception("job %s failed", payload.id)
        return await end(
            JobStatus.FAILED,
            queue_ms,
            None,
            JobError(type="engine_error", message=f"{type(exc).__name__}: {exc}"),
        )
    return await end(JobStatus.SUCCEEDED, queue_ms, result, None)


async def _resume_point(payload: JobPayload, store: JobStore, options: RunOptions) -> Resume | None:
    """Where a job sent again goes on from: the output its lost run left in its stream, when
    that can be continued (None: start over)."""
    if not options.resume or not resumable(payload.input):
        return None
    try:
        run = await store.run_so_far(payload.id)
    except Exception:  # noqa: BLE001 - resuming saves time; starting over is always right
        log.warning("job %s: its output so far not read; it starts over", payload.id, exc_info=True)
        return None
    if not run.output_tokens or not run.complete_ids:
        return None
    if run.output_tokens >= payload.input.sampling.max_tokens:
        return None  # nothing left to make: a run from nothing ends the same way
    log.info("job %s resumes after %d output tokens", payload.id, run.output_tokens)
    return Resume(text=run.text, token_ids=run.token_ids, next_index=run.next_index)


async def while_redis_full(what: str, step: Callable[[], Awaitable[T]]) -> T:
    """``step()``, again and again while Redis refuses writes for its maxmemory: the job's message
    stays unacknowledged and its result in this process meanwhile, and both go on once finished
    jobs expire (or an operator gives Redis more memory). Nothing accepted is dropped."""
    delay_s = FULL_RETRY_FIRST_S
    while True:
        try:
            return await step()
        except OutOfMemoryError:
            log.warning("%s not written: Redis is full (maxmemory); again in %g s", what, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, FULL_RETRY_MAX_S)


async def _abandon(task: asyncio.Future[GenerationResult] | None) -> None:
    """Cancel an engine request started ahead of its claim (vLLM aborts it) and wait until it is
    gone, whatever it raised."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _schedule(store: JobStore, delivery: Delivery) -> None:
    try:
        await store.schedule_webhook(delivery)
    except Exception:  # noqa: BLE001 - non-terminal events are best-effort; the job goes on
        log.warning(
            "job %s: %s event not scheduled", delivery.job_id, delivery.event, exc_info=True
        )


async def _output_events(job_id: str, store: JobStore, worker: str, progress: Progress) -> None:
    """While the job generates: every ``OUTPUT_EVENT_INTERVAL_S`` with new output, store the
    partial output on the record and schedule an ``output`` event (its payload is the record)."""
    seq = 0
    seen = 0
    while True:
        await asyncio.sleep(OUTPUT_EVENT_INTERVAL_S)
        if len(progress.pieces) == seen:
            continue
        seen = len(progress.pieces)
        partial = JobOutput(text="".join(progress.pieces[:seen])).model_dump()
        try:
            await store.transition(
                job_id, [JobStatus.PROCESSING], JobStatus.PROCESSING, {"output": partial}, worker
            )
        except TransitionRefused:
            return  # no longer ours, or finished
        except Exception:  # noqa: BLE001 - best-effort; try again at the next interval
            log.warning("job %s: partial output not stored", job_id, exc_info=True)
            continue
        seq += 1
        await _schedule(store, Delivery(job_id, "output", webhook_id(job_id, "output", seq)))


def _why(entry: RunningJob, ran: bool) -> str:
    what = "reached its deadline" if entry.cancel_reason == "deadline" else "canceled"
    return f"{what} {'while running' if ran else 'before it ran'}"


def _tell(options: RunOptions, ended: JobEnd) -> None:
    if options.on_end is None:
        return
    try:
        options.on_end(ended)
    except Exception:  # noqa: BLE001 - metrics never fail a job
        log.warning("on_end failed", exc_info=True)


async def _end(
    store: JobStore,
    payload: JobPayload,
    options: RunOptions,
    first_batch: bool,
    started_at: float,
    status: JobStatus,
    queue_ms: float | None,
    result: GenerationResult | None,
    error: JobError | None,
) -> JobStatus:
    completed_at = time.time()
    fields: dict[str, object] = {
        "completed_at": completed_at,
        "metrics": _metrics(payload, queue_ms, result, completed_at, first_batch).model_dump(),
    }
    if result is not None:
        fields["output"] = job_output(result, payload.input).model_dump()
    if error is not None:
        fields["error"] = error.model_dump()
    last_output = None
    if options.streams is not None:
        last_output = await options.streams.close(payload.id)
    try:
        await while_redis_full(
            f"job {payload.id}: result",
            lambda: store.transition(
                payload.id,
                [JobStatus.PROCESSING],
                status,
                fields,
                owner=options.worker,
                last_output=last_output,  # all of its text, before the stream's end
            ),
        )
    except TransitionRefused as refused:
        # Our lease lapsed (a stall longer than the lease) and another worker took the job over,
        # or it was finished meanwhile: its record is theirs now.
        log.warning(
            "job %s: result not stored, the job is no longer ours (%s)",
            payload.id,
            refused.current.value if refused.current else "gone",
        )
        return refused.current or JobStatus.FAILED
    _tell(
        options,
        JobEnd(
            status=status,
            queue_s=started_at - payload.created_at,
            run_s=completed_at - started_at,
            ttft_s=result.ttft_s if result is not None else None,
            output_tokens=result.output_tokens if result is not None else 0,
        ),
    )
    return status
