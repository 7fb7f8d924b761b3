"""Who is calling: the API keys of genq.contract.keys, required on every ``/v1`` route and on ``POST
/generate`` once any key is configured; each key's request rate, limited in Redis so that every
API process and replica shares one budget per key; and jobs visible to the key that made them.

Routes take ``caller: CallerDep`` and read jobs with :func:`owned_job`. With no key configured
(no keys file, no ``GENQ_API_KEYS``) the API is in dev mode: anyone may call it, a warning says so
at start, and nothing here touches Redis. Health checks and ``/metrics`` never ask for a key.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from api.deps import Services
from api.errors import ApiError
from genq.contract.constants import rate_limit_key
from genq.contract.keys import ApiKey, KeyRing, KeysError, key_ring, read_keys
from genq.contract.schemas import ErrorBody, JobRecord
from genq.contract.settings import ApiSettings

log = logging.getLogger(__name__)

# How often a process looks at the keys file for changes (`genq keys create` and `revoke` take
# effect within this, with no restart).
RELOAD_CHECK_S = 1.0
_CHALLENGE = {"WWW-Authenticate": "Bearer"}

# GCRA, the token bucket kept as one number: KEYS[1] holds when (ms, Redis's clock, shared by
# every API replica) the key's next request is due if it keeps to its rate; a burst may run that
# far ahead of now. ARGV: ms per request (1000 / rate), the burst. Returns '0' when the request
# may go (and books it), else the ms to wait.
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local due = tonumber(redis.call('GET', KEYS[1]) or '0')
if due < now then due = now end
local wait = due + interval - now - interval * tonumber(ARGV[2])
if wait > 0 then return string.format('%.3f', wait) end
local ttl = math.max(1, math.ceil(due + interval - now))  -- a tiny interval rounds away in a double
redis.call('SET', KEYS[1], string.format('%.3f', due + interval), 'PX', ttl)
return '0'
"""


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
        self._rate = redis.register_script(_RATE)
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
                401, "unauthorized", "an API key is needed: Authorization: Bearer <key>", _CHALLENGE
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "unauthorized",
                "the Authorization header must be 'Bearer <key>'",
                _CHALLENGE,
            )
        found = ring.authenticate(key)
        if found is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key", _CHALLENGE)
        return found

    async def check_rate(self, key: ApiKey) -> None:
        """429 when ``key`` is over its requests per second (one Redis call)."""
        rps = key.rate_limit_rps or self.settings.rate_limit_rps
        burst = key.rate_limit_burst or self.settings.rate_limit_burst
        wait_ms = float(await self._rate(keys=[rate_limit_key(key.name)], args=[1000 / rps, burst]))
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


async def _caller(request: Request) -> Caller:
    # No sub-dependencies, the header read directly: this runs on every request of the
    # 2,000 jobs/s path, and FastAPI's bookkeeping per dependency is not free (api.deps).
    access: Access = request.app.state.services.access
    ring = access.keys()
    if ring is None:
        return DEV_CALLER
    key = access.authenticate(ring, request.headers.get("authorization"))
    await access.check_rate(key)
    return Caller(key.name)


CallerDep = Annotated[Caller, Depends(_caller)]
# For routes that need a key but no caller: ``include_router(..., dependencies=AUTHENTICATED,
# responses=AUTH_ERRORS)``.
AUTHENTICATED = [Depends(_caller)]
AUTH_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "no API key, or an unknown one"},
    429: {"model": ErrorBody, "description": "the key is over its rate limit"},
}


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no job with id {job_id!r} (unknown or expired)")


async def owned_job(svc: Services, caller: Caller, job_id: str) -> JobRecord:
    """The job, if ``caller`` may see it. Another key's job is 404 like an unknown one, not 403:
    ids cannot be probed. In dev mode every job is everyone's."""
    record = await svc.store.get(job_id)
    if record is None or (caller.key_name is not None and record.owner != caller.key_name):
        raise not_found(job_id)
    return record
