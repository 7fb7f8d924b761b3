"""Publishing running jobs' output: every ``interval_s``, one Redis call (a script) appends each
running job's new text (since the last flush) to its stream (genq.store.streams).

Batched on purpose: a worker at saturation makes thousands of tokens per second over hundreds of
jobs, on the same event loop that drives the engine; one ``XADD`` per job per interval, all in
one script call, costs that loop ~1 ms per flush of 256 jobs here, and Redis one round trip. Readers (``GET /v1/jobs/{id}/stream``) follow the stream at their own pace:
generation never waits for them. A job's last delta is written by its terminal transition, in
the same Redis step as the stream's ``end`` entry, so a reader sees all of the text, then the end.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from redis.asyncio import Redis

from genq.contract.constants import stream_key
from genq.store.scripts import APPEND_OUTPUTS
from genq.store.streams import Output, encode_token_ids
from worker.host.engine import Progress, Resume

log = logging.getLogger(__name__)


@dataclass
class _Watched:
    progress: Progress
    sent_pieces: int = 0  # how many of progress.pieces are in the stream
    sent_tokens: int = 0  # how many of progress.token_ids are
    index: int = 0  # the next output entry's index


class OutputStreams:
    """Runs on the engine loop (like every job), so ``watch``/``close`` need no locks of their
    own; the flush lock keeps two flushes from overtaking each other, and a job's last delta
    (written by its terminal transition) from overtaking a flush on its way."""

    def __init__(self, redis: Redis, interval_s: float):
        self.redis = redis
        self.interval_s = interval_s
        self._append = redis.register_script(APPEND_OUTPUTS)
        self._jobs: dict[str, _Watched] = {}
        self._flush_lock = asyncio.Lock()

    def watch(self, job_id: str, progress: Progress, resume: Resume | None = None) -> None:
        """Publish the job's output from now on; a resumed run's starts after what its stream
        has already (the first piece of its progress, the text it resumed from)."""
        if resume is None:
            self._jobs[job_id] = _Watched(progress)
        else:
            self._jobs[job_id] = _Watched(
                progress, sent_pieces=1, sent_tokens=len(resume.token_ids), index=resume.next_index
            )

    def forget(self, job_id: str) -> None:
        """Stop publishing the job without flushing (it is handed back, not ended)."""
        self._jobs.pop(job_id, None)

    async def close(self, job_id: str) -> Output | None:
        """Stop publishing the job, and return its last text delta (None: nothing unsent) for
        its terminal transition to write, just before the stream's end, in the same Redis step
        (genq.store.jobs). A flush already on its way, which may carry the job's earlier text, lands
        first; closes of other jobs do not wait on each other."""
        job = self._jobs.pop(job_id, None)  # no flush from now on includes it
        if job is None:
            return None
        async with self._flush_lock:
            pass
        text = "".join(job.progress.pieces[job.sent_pieces :])
        return Output(job.index, text, job.progress.output_tokens) if text else None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self._flush(list(self._jobs))
            except Exception:  # noqa: BLE001 - Redis restarting: the next flush sends it all
                log.warning("output not published", exc_info=True)

    async def _flush(self, job_ids: list[str]) -> None:
        async with self._flush_lock:
            keys: list[str] = []
            args: list[str | int] = []
            sent: list[tuple[_Watched, int]] = []
            for job_id in job_ids:
                job = self._jobs.get(job_id)
                if job is None:
                    continue
                pieces, token_ids = job.progress.pieces, job.progress.token_ids
                upto, upto_tokens = len(pieces), len(token_ids)
                text = "".join(pieces[job.sent_pieces : upto])
                if not text:
                    continue
                keys.append(stream_key(job_id))
                ids = encode_token_ids(token_ids[job.sent_tokens : upto_tokens])
                args += [job.index, text, job.progress.output_tokens, ids]
                sent.append((job, upto, upto_tokens))
            if not sent:
                return
            await self._append(keys=keys, args=args)
            # Only what Redis took counts as sent: a failed flush is sent again whole (a reader
            # skips a delta whose index it has seen: api.job_stream).
            for job, upto, upto_tokens in sent:
                job.sent_pieces, job.sent_tokens = upto, upto_tokens
                job.index += 1
