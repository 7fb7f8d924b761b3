"""Synchronous requests when the API is told to stop.

On SIGTERM or SIGINT uvicorn stops accepting, lets the requests in flight finish for
``GENQ_API_SHUTDOWN_GRACE_S`` and then cancels them: a client still waiting on ``POST /generate``
(or a non-streamed OpenAI request) for a job that cannot end in time would get a bare 500. This
hooks the same signals: shortly before that cut, the waiter (api.waiter) ends every wait, and
such a request is answered 503 naming its job, which stays queued or running and can be polled.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType

EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def answer_before(grace_s: float) -> float:
    """When, after the signal, waiting requests are answered: a few seconds before the cut (half
    the grace when it is short), so that their answers are written before it."""
    return grace_s - min(5.0, grace_s / 2)


def on_exit_signal(
    loop: asyncio.AbstractEventLoop, callback: Callable[[], None]
) -> Callable[[], None]:
    """Run ``callback`` on ``loop`` at the first SIGTERM or SIGINT, then the handler that was
    there (uvicorn's, which starts its graceful shutdown). Returns what puts that handler back.
    Only a signal whose handler is a Python function (a server's) is hooked; outside the main
    thread (an app under a test client) none can be: nothing happens then."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    handlers = {sig: signal.getsignal(sig) for sig in EXIT_SIGNALS}
    previous = {sig: handler for sig, handler in handlers.items() if callable(handler)}
    fired = False

    def handler(sig: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            loop.call_soon_threadsafe(callback)  # a signal handler must not touch the loop itself
        previous[sig](sig, frame)

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, chained in previous.items():
            signal.signal(sig, chained)

    return restore
