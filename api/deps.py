"""What routes share, as one ``Annotated`` dependency: the process's clients, made once in the
lifespan (api.app) and kept on ``app.state.services``.

One dependency rather than one per client, and ``async def``: FastAPI solves every dependency of
every request (a plain ``def`` one even in a thread pool), and on the hot ``POST /v1/jobs`` path
that bookkeeping cost more than the job's own Redis step (ops/bench/api_ceiling.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from redis.asyncio import Redis

from api.access import Access
from api.job_stream import StreamReaders
from api.waiter import JobWaiter
from genq.contract.settings import ApiSettings
from genq.contract.ssrf import AllowList
from genq.store.batches import BatchStore
from genq.store.jobs import JobStore
from genq.store.models import ModelCatalog


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    redis: Redis
    store: JobStore
    batches: BatchStore
    waiter: JobWaiter
    celery: Celery  # builds task messages only; the API never connects it to the broker
    webhook_allow: AllowList
    streams: StreamReaders  # output streams' readers, on a Redis pool of their own
    access: Access  # API keys and their limits (api.access)
    models: ModelCatalog  # the models served, and a job's default (genq.contract.models)


async def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]
