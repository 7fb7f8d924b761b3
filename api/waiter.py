"""Wait for jobs to finish without polling: one Redis pub/sub subscription per API process.

Workers publish a job's id on ``genq:jobs:done`` in the same atomic step that makes it terminal
(genq.store). Waiters register a future per job id; the listener resolves them. If the
subscription drops, every waiter is woken to re-read its record, so none waits on a lost message.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from redis.asyncio import Redis

from genq.constants import JOB_DONE_CHANNEL
from genq.pubsub import listen_forever
from genq.schemas import JobRecord
from genq.store import JobStore


class JobWaiter:
    def __init__(self, redis: Redis, store: JobStore):
        self._redis = redis
        self._store = store
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # After each (re)subscription, wake everyone: a job may have finished meanwhile.
        listen = listen_forever(self._redis, JOB_DONE_CHANNEL, self._wake, self._wake)
        self._task = asyncio.create_task(listen, name="genq-job-waiter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _wake(self, job_id: str | None = None) -> None:
        targets = [self._waiters.get(job_id, set())] if job_id else list(self._waiters.values())
        for futures in targets:
            for fut in futures:
                if not fut.done():
                    fut.set_result(None)

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """The job's record once terminal, or as it stands after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters[job_id].add(fut)
            try:
                record = await self._store.get(job_id)
                left = deadline - time.monotonic()
                if record is None or record.status.is_terminal() or left <= 0:
                    return record
                try:
                    await asyncio.wait_for(fut, left)
                except asyncio.TimeoutError:
                    pass
            finally:
                self._waiters[job_id].discard(fut)
                if not self._waiters[job_id]:
                    del self._waiters[job_id]
