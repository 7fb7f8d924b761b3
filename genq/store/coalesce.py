"""One Redis Lua script's calls that come in together, sent together: one pipeline a batch.

Why: a burst of requests in one asyncio process (an API process taking 500 ``POST /generate`` at
once) interleaves every request's steps. Each request's own Redis call waited for a connection
(the pool opened one per caller, hundreds), then behind every other request's parsing, so the
first job of a burst reached its queue little sooner than the last, and a worker's engine got
the burst as a trickle (docs/performance.md, "A burst's creates go to Redis together"). Here a
call joins the batch that is waiting to go; while one batch is on the wire the next one gathers,
so a burst goes out in a few pipelines on one connection, in the order the calls came.

Each call still gets its own result or its own error, and a call canceled before its batch left
is dropped from it (as a single command canceled before it was sent never runs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

MAX_BATCH = 256  # calls in one pipeline: a bigger burst goes out in several, back to back


class CoalescedScript:
    """``await script(keys, args)``: what the script returns for this call (or raises its
    error), as ``Script(keys=..., args=...)`` would, sent with the calls beside it."""

    def __init__(self, redis: Redis, script: str, max_batch: int = MAX_BATCH):
        self._redis = redis
        self._text = script
        self._sha = redis.register_script(script).sha
        self._loaded = False  # by this object, once: after that only a Redis restart loses it
        self._max_batch = max_batch
        self._waiting: list[tuple[Sequence[Any], Sequence[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, args, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="genq-coalesced-script")
        return await future

    async def _send(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            batch = [call for call in batch if not call[2].done()]  # done: canceled
            if not batch:
                continue
            try:
                results = await self._run([(keys, args) for keys, args, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each caller gets it as its own call's error
                results = [exc] * len(batch)
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _run(self, calls: list[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        if not self._loaded:
            await self._redis.script_load(self._text)
            self._loaded = True
        results = await self._pipeline(calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:  # Redis lost its scripts (restarted): load it, run those calls again
            await self._redis.script_load(self._text)
            again = await self._pipeline([calls[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, calls: list[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """One round trip: EVALSHA for each call (no SCRIPT EXISTS first, as redis-py's
        pipelined scripts do: that would be a second round trip for every batch)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)
