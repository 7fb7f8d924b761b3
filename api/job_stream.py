"""Following a job's output stream (genq.store.streams) from the API: what ``GET
/v1/jobs/{id}/stream`` and the OpenAI front's ``stream: true`` both read.

Each reader blocks on ``XREAD`` on a connection of its own, from a pool kept apart from the one
the other routes use, so a thousand open streams never make a ``POST /v1/jobs`` wait for a
connection. Past ``max_readers`` open streams, a new one is refused (503 with Retry-After) rather
than queued behind them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from api.errors import ApiError
from genq.contract.constants import job_key, stream_key
from genq.contract.schemas import JobStatus
from genq.store import streams

KEEPALIVE_S = 15.0  # a reader hears something at least this often
_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")


class JobGone(Exception):
    """The job expired while a reader followed it."""


@dataclass
class Event:
    id: str  # the stream entry's id: what a reader sends back as Last-Event-ID
    entry: streams.Entry


class StreamReaders:
    def __init__(self, redis: Redis, max_readers: int):
        self.redis = redis
        self.max_readers = max_readers
        self.open = 0

    def check_last_event_id(self, value: str | None) -> str:
        """Where to read from: the beginning, or after the entry a client saw last."""
        if value is None:
            return "0-0"
        if not _ENTRY_ID.fullmatch(value):
            raise ApiError(
                422, "invalid_request", f"Last-Event-ID {value!r} is not an id this stream sent"
            )
        return value

    def admit(self) -> None:
        """Refuse a new stream when this process serves as many as it may (before the response
        starts: afterwards no status can be sent)."""
        if self.open >= self.max_readers:
            raise ApiError(
                503,
                "unavailable",
                f"{self.open} streams are open on this API process (the most it serves); "
                "retry shortly or poll the job",
                {"Retry-After": "5"},
            )

    async def follow(self, job_id: str, after: str = "0-0") -> AsyncIterator[Event | None]:
        """The job's entries after ``after``, in order, to its ``End`` (included); ``None``
        after every ``KEEPALIVE_S`` without one. A delta that a worker sent twice (its Redis
        went away mid-flush) is passed on once. Raises :class:`JobGone` if the job expires."""
        self.open += 1
        try:
            key = stream_key(job_id)
            next_index = await self._next_index(key, after)
            last = after
            while True:
                read = await self.redis.xread({key: last}, count=512, block=int(KEEPALIVE_S * 1000))
                if not read:
                    status = await self.redis.hget(job_key(job_id), "status")
                    if status is None:
                        raise JobGone(job_id)
                    if JobStatus(status).is_terminal() and not await self.redis.exists(key):
                        # Ended, and its stream was dropped after GENQ_STREAM_KEEP_S (or expired
                        # while this reader waited): the end, for the finished job.
                        yield Event("", streams.End(status))
                        return
                    yield None
                    continue
                for entry_id, fields in read[0][1]:
                    last = entry_id
                    entry = streams.decode(fields)
                    if isinstance(entry, streams.Start) and not entry.resumed_at:
                        next_index = 0  # a run from nothing (a resumed one carries on)
                    elif isinstance(entry, streams.Output):
                        if entry.index < next_index:
                            continue
                        next_index = entry.index + 1
                    yield Event(entry_id, entry)
                    if isinstance(entry, streams.End):
                        return
        finally:
            self.open -= 1

    async def _next_index(self, key: str, after: str) -> int:
        """The index of the delta that follows entry ``after`` (0 from the start)."""
        if after == "0-0":
            return 0
        seen = await self.redis.xrange(key, min=after, max=after)
        if not seen:
            return 0
        entry = streams.decode(seen[0][1])
        return entry.index + 1 if isinstance(entry, streams.Output) else 0

    async def has_stream(self, job_id: str) -> bool:
        return bool(await self.redis.exists(stream_key(job_id)))
