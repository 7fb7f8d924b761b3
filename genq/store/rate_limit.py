"""Each API key's request rate, limited in Redis so that every API process and replica shares one
budget per key: GCRA, a token bucket kept as one number per key (lua/rate_limit.lua)."""

from __future__ import annotations

from redis.asyncio import Redis

from genq.contract.constants import rate_limit_key
from genq.store import scripts


class RateLimiter:
    def __init__(self, redis: Redis):
        self._script = redis.register_script(scripts.RATE_LIMIT)

    async def wait_ms(self, key_name: str, rps: float, burst: int) -> float:
        """0 when the key may make a request now (it is booked), else the ms until it may."""
        return float(await self._script(keys=[rate_limit_key(key_name)], args=[1000 / rps, burst]))
