"""Who may call: the API keys in force (genq.contract.keys: a keys file, reloaded when it changes,
or ``GENQ_API_KEYS``), each key's request rate (genq.store.rate_limit: one budget per key shared
by every API process and replica) and its active-jobs limit. One :class:`Access` per API process;
the routes' dependency is api.auth.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from api.errors import ApiError
from genq.contract.keys import ApiKey, KeyRing, KeysError, key_ring, read_keys
from genq.contract.settings import ApiSettings
from genq.store.rate_limit import RateLimiter

log = logging.getLogger(__name__)

# How often a process looks at the keys file for changes (`genq keys create` and `revoke` take
# effect within this, with no restart).
RELOAD_CHECK_S = 1.0
CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made the request: the name of its API key; None in dev mode (no key configured)."""

    key_name: str | None


DEV_CALLER = Caller(None)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


class Access:
    """One per API process (``Services.access``): the keys in force, reloaded when the keys
    file changes, and the per-key limits."""

    def __init__(self, settings: ApiSettings, redis: Redis):
        self.settings = settings
        self.path = settings.api_keys_path()
        self._rate = RateLimiter(redis)
        self._seen = _stat(self.path)
        self.ring: KeyRing | None = key_ring(read_keys(self.path), settings.api_keys)
        self._next_check = time.monotonic() + RELOAD_CHECK_S

    def announce(self) -> None:
        if self.ring is None:
            log.warning(
                "DEV MODE: no API key is configured (no %s, no GENQ_API_KEYS), so anyone who "
                "can reach this API can submit, read and cancel every job. Make a key with "
                "`genq keys create NAME`.",
                self.path,
            )
        else:
            log.info("API keys: %d configured; every /v1 request needs one", len(self.ring))

    def keys(self) -> KeyRing | None:
        """The keys in force now; None in dev mode."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + RELOAD_CHECK_S
            self._reload()
        return self.ring

    def _reload(self) -> None:
        seen = _stat(self.path)
        if seen == self._seen:
            return
        try:
            ring = key_ring(read_keys(self.path), self.settings.api_keys)
        except KeysError as exc:
            log.error("keeping the keys in force: %s", exc)
            return
        self._seen, self.ring = seen, ring
        self.announce()

    def authenticate(self, ring: KeyRing, authorization: str | None) -> ApiKey:
        if authorization is None:
            raise ApiError(
                401, "unauthorized", "an API key is needed: Authorization: Bearer <key>", CHALLENGE
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "unauthorized",
                "the Authorization header must be 'Bearer <key>'",
                CHALLENGE,
            )
        found = ring.authenticate(key)
        if found is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key", CHALLENGE)
        return found

    async def check_rate(self, key: ApiKey) -> None:
        """429 when ``key`` is over its requests per second (one Redis call)."""
        rps = key.rate_limit_rps or self.settings.rate_limit_rps
        burst = key.rate_limit_burst or self.settings.rate_limit_burst
        wait_ms = await self._rate.wait_ms(key.name, rps, burst)
        if wait_ms > 0:
            retry_after = max(1, math.ceil(wait_ms / 1000))
            raise ApiError(
                429,
                "rate_limited",
                f"key {key.name!r} is over its rate limit of {rps:g} requests/s (burst {burst}); "
                f"retry after {retry_after} s",
                {"Retry-After": str(retry_after)},
            )

    def max_active_jobs(self, owner: str) -> int:
        """How many jobs ``owner`` (a key's name) may have queued or processing at once."""
        key = self.ring.named(owner) if self.ring is not None else None
        if key is not None and key.max_active_jobs is not None:
            return key.max_active_jobs
        return self.settings.max_active_jobs_per_key
