"""Wait for jobs to finish without polling: one Redis pub/sub subscription per API process.

Workers publish a job's id and record on ``genq:jobs:done`` in the same atomic step that makes it
terminal (genq.store.jobs). Waiters register a future per job id; the listener resolves them with
the record from the message, so a waiter answers without reading it back (one Redis round trip less
per synchronous request). If the subscription drops, every waiter is woken to re-read its record,
so none waits on a lost message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

from redis.asyncio import Redis

from genq.contract.constants import JOB_DONE_CHANNEL
from genq.contract.schemas import JobRecord
from genq.store.jobs import JobStore, decode_done_message, decode_record
from genq.store.pubsub import listen_forever


class JobWaiter:
    def __init__(self, redis: Redis, store: JobStore):
        self._redis = redis
        self._store = store
        # A future resolves to the job's terminal record, or to None: read it again.
        self._waiters: defaultdict[str, set[asyncio.Future[JobRecord | None]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        # Set when the process is stopping (api.shutdown): every wait ends at once.
        self.draining = False

    async def start(self) -> None:
        # After each (re)subscription, wake everyone: a job may have finished meanwhile.
        listen = listen_forever(self._redis, JOB_DONE_CHANNEL, self._wake, self._wake)
        self._task = asyncio.create_task(listen, name="genq-job-waiter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def drain(self) -> None:
        """End every wait now, and every wait begun from now on, with the record as it stands:
        the process is about to stop (api.shutdown)."""
        self.draining = True
        self._wake()

    def _wake(self, message: str | None = None) -> None:
        if message is None:
            targets = list(self._waiters.values())
            record = None
        else:
            if message.partition(" ")[0] not in self._waiters:
                return  # nobody here waits for it: don't decode its record
            job_id, raw = decode_done_message(message)
            targets = [self._waiters[job_id]]
            # A record with webhook attempts keeps them beside it: read it whole instead.
            record = decode_record(raw) if raw is not None and "webhook" not in raw else None
        for futures in targets:
            for fut in futures:
                if not fut.done():
                    fut.set_result(record)

    @contextlib.contextmanager
    def expecting(self, job_id: str) -> Iterator[asyncio.Future[JobRecord | None]]:
        """Watch for the end of a job about to be created here: enter before its create is sent,
        then ``wait(job_id, timeout_s, expected)``. Its end cannot be missed, so that wait skips
        the first read of its record: one Redis call less per synchronous request, and in a
        burst the API opens no connection for it."""
        future: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._waiters[job_id].add(future)
        try:
            yield future
        finally:
            self._forget(job_id, future)

    async def wait(
        self,
        job_id: str,
        timeout_s: float,
        expected: asyncio.Future[JobRecord | None] | None = None,
    ) -> JobRecord | None:
        """The job's record once terminal, or as it stands after ``timeout_s`` or when the
        waiter is drained. ``expected``: from :meth:`expecting`, entered before the job was
        created."""
        deadline = time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        while True:
            read = expected is None or self.draining
            fut = loop.create_future() if read else expected
            expected = None
            self._waiters[job_id].add(fut)
            try:
                if read:
                    record = await self._store.get(job_id)
                    late = time.monotonic() >= deadline
                    if record is None or record.status.is_terminal() or late or self.draining:
                        return record
                left = deadline - time.monotonic()
                try:
                    if (done := await asyncio.wait_for(fut, left)) is not None:
                        return done
                except asyncio.TimeoutError:
                    pass
            finally:
                self._forget(job_id, fut)

    def _forget(self, job_id: str, fut: asyncio.Future[JobRecord | None]) -> None:
        futures = self._waiters.get(job_id)
        if futures is not None:
            futures.discard(fut)
            if not futures:
                del self._waiters[job_id]
