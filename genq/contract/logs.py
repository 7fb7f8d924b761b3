"""How every genq process logs: one format, the level from its settings (``GENQ_LOG_LEVEL``).

At INFO, the default, a process says what genq does and what goes wrong anywhere: genq's own INFO
lines, and WARNING and above of every library. The libraries' INFO lines that repeat on every
request or restate what genq says already (:data:`CHATTY`; uvicorn's in :func:`quiet_uvicorn`;
vLLM's in worker.host.vllm_log) come back with ``GENQ_LOG_LEVEL=debug``. Without them `genq up`
prints its URLs, the worker's start-up one phase a line, "ready", then a line per job from the
worker and one per request from the API: no line for its own /readyz polls, twice a second.
"""

from __future__ import annotations

import logging

# Libraries' loggers held at WARNING unless genq logs at DEBUG, and what each says at INFO.
CHATTY = {
    # A line per HTTP request: `genq up` polling /readyz twice a second while the worker warms,
    # the webhooks sender's deliveries (which it logs itself).
    "httpx": "HTTP Request: GET http://127.0.0.1:8000/readyz 503",
    # Two lines per job, where the worker logs one (worker.celery_app).
    "celery.worker.strategy": "Task genq.generate[...] received",
    "celery.app.trace": "Task genq.generate[...] succeeded in 0.5s: {...}",
    # Start-up lines that `genq up` says in its own words, or that tell nothing to act on.
    "celery.apps.worker": "genq-1234@host ready.",
    "celery.worker.consumer.connection": "Connected to redis://:**@127.0.0.1:6379/0",
    "flower.command": "Visit me at ..., Broker: ..., Registered tasks: [...]",
    # vLLM's lines from before its own logging config applies (worker.host.vllm_log, which
    # shows its start-up one phase a line).
    "vllm": "Triton is installed but 0 active driver(s) found",
}
# Held at ERROR: warnings that tell nothing to act on.
HUSHED = {
    # At every Flower start, before it has heard from any worker.
    "flower.inspector": "Inspect method stats failed",
}
# Access lines of these paths are dropped (quiet_uvicorn): probes and scrapes, every few seconds.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def verbose(level: str) -> bool:
    """Whether ``level`` (``GENQ_LOG_LEVEL``) asks for every library's INFO lines too."""
    return logging.getLevelName(level.upper()) in (logging.DEBUG, logging.NOTSET)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(processName)s %(name)s] %(message)s",
    )
    if not verbose(level):
        for name in CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
        for name in HUSHED:
            logging.getLogger(name).setLevel(logging.ERROR)


class DropProbes(logging.Filter):
    """Passes uvicorn's access lines except those of :data:`PROBE_PATHS`. uvicorn logs each with
    the arguments ``(client, method, path, http version, status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            return args[2].partition("?")[0] not in PROBE_PATHS
        return True


def quiet_uvicorn(level: str) -> None:
    """After uvicorn has set its loggers up (it does so before it makes the app, and sets their
    levels from its own ``log_level``): below DEBUG, no access line for a probe or a scrape, and
    none of uvicorn's INFO lines about its own start and stop. Once per process is enough; more
    is harmless."""
    if verbose(level):
        return
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, DropProbes) for f in access.filters):
        access.addFilter(DropProbes())
    lifecycle = logging.getLogger("uvicorn.error")
    lifecycle.setLevel(max(lifecycle.getEffectiveLevel(), logging.WARNING))
