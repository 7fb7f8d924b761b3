"""``create_app()``: wires the routes, the error handlers and the clients (made in the lifespan).

Run with ``genq api`` or ``uvicorn --factory api.app:create_app``.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import genq
from api import shutdown
from api.access import Access
from api.auth import AUTH_ERRORS, AUTHENTICATED
from api.deps import Services
from api.errors import install_error_handlers
from api.job_stream import StreamReaders
from api.limits import BodySizeLimit
from api.request_metrics import RequestMetrics
from api.routes import (
    batches,
    generate,
    health,
    jobs,
    metrics,
    models,
    openai,
    queue,
    stream,
    workers,
)
from api.waiter import JobWaiter
from genq.contract.logs import quiet_uvicorn
from genq.contract.settings import ApiSettings, api_settings
from genq.store.batches import BatchStore
from genq.store.jobs import JobStore
from genq.store.models import ModelCatalog
from genq.store.queue import make_celery
from genq.store.redis_client import async_redis


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ApiSettings = app.state.settings
    redis = async_redis(settings.broker_url())
    store = JobStore(redis, settings.result_ttl_s, settings.stream_keep_s)
    waiter = JobWaiter(redis, store)
    celery = make_celery(settings, "genq-api")
    allow = settings.webhook_allow_list()
    batches = BatchStore(redis, settings.result_ttl_s)
    stream_redis = async_redis(settings.broker_url(), max_connections=settings.max_streams)
    readers = StreamReaders(stream_redis, settings.max_streams)
    access = Access(settings, redis)
    access.announce()  # dev mode: a warning that anyone may use this API
    models = ModelCatalog(redis, settings.models, settings.default_model, settings.model_forget_s)
    app.state.services = Services(
        settings, redis, store, batches, waiter, celery, allow, readers, access, models
    )
    await waiter.start()
    # A request still waiting for its job when the server is about to cut it gets a 503 that
    # names the job, not a 500 (api.shutdown).
    loop = asyncio.get_running_loop()
    at = shutdown.answer_before(settings.api_shutdown_grace_s)
    unhook = shutdown.on_exit_signal(loop, lambda: loop.call_later(at, waiter.drain))
    # What the process made to start stays: keep the collector from walking it again and again
    # (as vLLM's own server does after start-up).
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        unhook()
        await waiter.stop()
        celery.close()
        await stream_redis.aclose()
        await redis.aclose()


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or api_settings()
    # uvicorn makes the app once it has set its loggers up: the probes' access lines go now.
    quiet_uvicorn(settings.log_level)
    app = FastAPI(title="genq", version=genq.__version__, lifespan=lifespan)
    app.state.settings = settings
    # Not a setting: what `genq up` gives the API it starts, for /readyz to say whose it is.
    app.state.instance_token = os.environ.get(health.INSTANCE_TOKEN_ENV) or None
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)  # added last: outermost, it sees BodySizeLimit's 413s
    install_error_handlers(app)
    app.include_router(jobs.router)
    app.include_router(stream.router)
    app.include_router(batches.router)
    app.include_router(openai.router)
    app.include_router(models.router)
    app.include_router(generate.router)
    # /v1 routes and /generate need a key once any is configured (api.auth); the job routes take
    # the caller as a parameter, these need none.
    app.include_router(workers.router, dependencies=AUTHENTICATED, responses=AUTH_ERRORS)
    app.include_router(queue.router, dependencies=AUTHENTICATED, responses=AUTH_ERRORS)
    app.include_router(health.router)
    app.include_router(metrics.router)
    return app
