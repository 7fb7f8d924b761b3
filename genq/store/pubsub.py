"""Listening on a Redis pub/sub channel for as long as the process lives, through Redis restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis

log = logging.getLogger(__name__)


async def listen_forever(
    redis: Redis,
    channel: str,
    on_message: Callable[[str], None],
    on_subscribed: Callable[[], None] = lambda: None,
) -> None:
    """Call ``on_message(data)`` for each message. After every (re)subscription
    ``on_subscribed()`` runs, so the caller can catch up on what it may have missed."""
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            on_subscribed()
            while True:
                message = await pubsub.get_message(timeout=5.0)
                if message is not None:
                    on_message(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - Redis restarting: subscribe again
            log.warning("subscription to %s lost; resubscribing", channel, exc_info=True)
            await asyncio.sleep(0.5)
        finally:
            await pubsub.aclose()
