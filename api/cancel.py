"""Canceling jobs, one (``POST /v1/jobs/{id}/cancel``) or a batch's: a queued job is canceled in
one atomic step and never runs; a running one is asked to stop over Redis pub/sub, and the worker
running it aborts it inside its engine (it then ends ``canceled`` with its partial output)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from redis.asyncio import Redis

from genq.contract.constants import CANCEL_CHANNEL
from genq.contract.schemas import JobError


def canceled_before_run() -> dict[str, object]:
    """The fields a queued job ends with when it is canceled."""
    return {
        "completed_at": time.time(),
        "error": JobError(type="canceled", message="canceled before it ran").model_dump(),
    }


async def ask_to_stop(redis: Redis, job_ids: Iterable[str]) -> None:
    """Every worker hears this; the one running each job aborts it in its engine."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.publish(CANCEL_CHANNEL, json.dumps({"id": job_id, "reason": "canceled"}))
        await pipe.execute()
