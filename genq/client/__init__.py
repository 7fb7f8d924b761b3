"""A Python client for genq's HTTP API: ``Client`` (blocking) and ``AsyncClient`` (asyncio), on
httpx, with the same methods::

    from genq.client import Client

    with Client() as genq:  # GENQ_URL, GENQ_API_KEY
        job = genq.submit("Once upon a time", max_tokens=64)
        for delta in genq.stream(job.id):
            print(delta, end="", flush=True)

Results are the API's own models (``genq.contract.schemas.JobPublic``). Every non-2xx answer raises
a ``GenqError`` subclass carrying the API's error body; network failures raise httpx's
``httpx.TransportError``, except inside a stream, which reconnects and resumes with
``Last-Event-ID``. Light on purpose: httpx and pydantic (no torch, vLLM, FastAPI or Celery).
"""

from genq.client.clients import DEFAULT_TIMEOUT_S, DEFAULT_URL, MAX_WAIT_S, AsyncClient, Client
from genq.client.errors import (
    Conflict,
    GenqError,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    StreamRestarted,
    Unauthorized,
    error_from_response,
)
from genq.client.events import CompletedEvent, JobEvent, OutputEvent, StartEvent

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "MAX_WAIT_S",
    "AsyncClient",
    "Client",
    "CompletedEvent",
    "Conflict",
    "GenqError",
    "InvalidRequest",
    "JobEvent",
    "NotFound",
    "OutputEvent",
    "RateLimited",
    "ServerError",
    "StartEvent",
    "StreamRestarted",
    "Unauthorized",
    "error_from_response",
]
