"""Which models a deployment serves, and which one a job goes to.

The API accepts a model that is

- declared in ``GENQ_MODELS`` (the API's setting: its workers may still be starting, or scaled to
  zero; jobs wait for them), or
- registered by a worker: every worker writes its model's name into ``genq:models`` as it starts,
  before its engine loads, and again with each heartbeat. A name no worker has mentioned for
  ``GENQ_MODEL_FORGET_S`` (a week) is forgotten.

Any other name is refused (422 on genq's routes, 404 on the OpenAI front, as OpenAI does), with
the list of models served. A job that names no model goes to ``GENQ_DEFAULT_MODEL``; unset, to the
first of ``GENQ_MODELS``; unset too, to the one model registered (with several, it must name one).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from genq.contract.constants import MODELS_KEY
from genq.contract.models import NoDefaultModel, UnknownModel

if TYPE_CHECKING:
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline


def register(redis: SyncRedis | Pipeline, name: str) -> Any:
    """A worker says it serves ``name``: at start, before its engine loads (a synchronous client),
    and with each heartbeat (in its pipeline)."""
    return redis.hset(MODELS_KEY, name, repr(time.time()))


def recent(seen: Mapping[str, str], forget_s: float) -> list[str]:
    """The names in ``genq:models`` (name -> last mention) mentioned within ``forget_s``."""
    since = time.time() - forget_s
    return sorted(name for name, at in seen.items() if float(at) >= since)


class ModelCatalog:
    """The API's view of the models served: ``GENQ_MODELS`` plus those workers registered,
    read from Redis at most once per ``refresh_s`` (and again before a name is refused, so that a
    worker's new model is taken at once): no Redis round trip on most submits."""

    def __init__(
        self,
        redis: Redis,
        declared: list[str],
        default: str | None,
        forget_s: float,
        refresh_s: float = 1.0,
    ):
        self.redis = redis
        # The default counts as declared: jobs that name it go where jobs naming none go.
        self.declared = list(dict.fromkeys([default, *declared] if default else declared))
        self.default = default
        self.forget_s = forget_s
        self.refresh_s = refresh_s
        self._registered: list[str] = []
        self._read_at = float("-inf")

    async def registered(self, fresh: bool = False) -> list[str]:
        """Models workers registered lately, sorted."""
        if fresh or time.monotonic() - self._read_at > self.refresh_s:
            self._registered = recent(await self.redis.hgetall(MODELS_KEY), self.forget_s)
            self._read_at = time.monotonic()
        return self._registered

    async def known(self, fresh: bool = False) -> list[str]:
        """Every model served: the declared ones first, in their order, then the registered."""
        return list(dict.fromkeys(self.declared + await self.registered(fresh)))

    async def resolve(self, asked: str | None) -> str:
        """The model a job goes to. Raises :class:`UnknownModel` or :class:`NoDefaultModel`."""
        if asked is None:
            return await self._default()
        if asked in self.declared or asked in await self.registered():
            return asked
        known = await self.known(fresh=True)
        if asked in known:
            return asked
        raise UnknownModel(f"model {asked!r} is not served here; {_listing(known)}")

    async def _default(self) -> str:
        if self.default is not None:
            return self.default
        if self.declared:
            return self.declared[0]
        registered = await self.registered()
        if len(registered) != 1:
            registered = await self.registered(fresh=True)
        if len(registered) == 1:
            return registered[0]
        raise NoDefaultModel(
            f"this request names no model and no default is set (GENQ_DEFAULT_MODEL); "
            f"{_listing(registered)}"
        )


def _listing(models: list[str]) -> str:
    if not models:
        return "no model is served yet (no worker has started; the API's GENQ_MODELS is empty)"
    return "models: " + ", ".join(models)
