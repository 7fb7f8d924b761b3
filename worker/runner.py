"""One job, start to end: claim it, run it on the engine, store the result.

Runs as a coroutine on the engine's event loop (the Celery task thread only waits for it), so the
Redis writes and the engine calls of every job share one loop and one connection pool.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from genq.schemas import JobError, JobInput, JobMetrics, JobOutput, JobPayload, JobStatus
from genq.store import JobStore, TransitionRefused
from worker.engine import EngineFailed, GenerationResult, InvalidInput

log = logging.getLogger(__name__)


class GeneratingEngine(Protocol):
    async def generate(self, request_id: str, job: JobInput) -> GenerationResult: ...


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


async def run_job(
    payload: JobPayload, store: JobStore, engine: GeneratingEngine, worker: str
) -> JobStatus:
    """Returns the status the job ended in (or had, if another worker or a cancel got there first)."""
    started_at = time.time()
    try:
        await store.transition(
            payload.id,
            [JobStatus.QUEUED],
            JobStatus.PROCESSING,
            {"started_at": started_at, "worker": worker},
        )
    except TransitionRefused as refused:
        # Canceled while queued, expired, or a redelivery of a job that already ran: skip it.
        log.info("job %s not started: it is %s", payload.id, refused.current or "unknown")
        return refused.current or JobStatus.FAILED

    queue_ms = _ms(started_at - payload.created_at)
    try:
        result = await engine.generate(payload.id, payload.input)
    except InvalidInput as exc:
        return await _fail(store, payload, queue_ms, "invalid_input", str(exc))
    except EngineFailed as exc:
        await _fail(store, payload, queue_ms, "engine_error", f"the engine died: {exc}")
        raise
    except Exception as exc:  # noqa: BLE001 - a job that cannot run ends failed, readably
        log.exception("job %s failed", payload.id)
        return await _fail(store, payload, queue_ms, "engine_error", f"{type(exc).__name__}: {exc}")

    completed_at = time.time()
    metrics = JobMetrics(
        queue_ms=queue_ms,
        ttft_ms=_ms(result.ttft_s),
        generation_ms=_ms(result.generation_s),
        total_ms=_ms(completed_at - payload.created_at),
        prompt_tokens=result.prompt_tokens,
        output_tokens=result.output_tokens,
        tokens_per_s=round(result.output_tokens / result.generation_s, 2)
        if result.generation_s > 0
        else None,
    )
    await store.transition(
        payload.id,
        [JobStatus.PROCESSING],
        JobStatus.SUCCEEDED,
        {
            "completed_at": completed_at,
            "output": JobOutput(text=result.text, finish_reason=result.finish_reason).model_dump(),
            "metrics": metrics.model_dump(),
        },
    )
    return JobStatus.SUCCEEDED


async def _fail(
    store: JobStore, payload: JobPayload, queue_ms: float | None, kind: str, message: str
) -> JobStatus:
    completed_at = time.time()
    metrics = JobMetrics(queue_ms=queue_ms, total_ms=_ms(completed_at - payload.created_at))
    await store.transition(
        payload.id,
        [JobStatus.PROCESSING],
        JobStatus.FAILED,
        {
            "completed_at": completed_at,
            "error": JobError(type=kind, message=message).model_dump(),
            "metrics": metrics.model_dump(),
        },
    )
    return JobStatus.FAILED
