"""``GET /v1/jobs/{id}/stream``: a job's output as Server-Sent Events.

Events, each with an ``id:`` (send it back as ``Last-Event-ID`` to resume after it) and one
``data:`` line of JSON: ``start`` (the job, when a worker starts it; a second ``start`` is a
retry after a worker died, whose text restarts from nothing), ``output`` (``{"index", "text",
"output_tokens"}``: a text delta, indexes 0, 1, 2... within one start), ``completed`` (the
finished job; the stream ends), ``error`` (the job expired; the stream ends). A comment line
every 15 s keeps proxies from closing a quiet stream. A client that connects late gets
everything from the start, then the live rest; one that connects more than ``GENQ_STREAM_KEEP_S``
after the job ended gets ``completed`` at once (the finished job carries all of its text).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from api.auth import AUTH_ERRORS, CallerDep, owned_job
from api.deps import Services, ServicesDep
from api.job_stream import JobGone
from api.responses import JOBS_PREFIX, SSE_HEADERS, public, sse
from genq.contract.schemas import ErrorBody, ErrorDetail
from genq.store import streams

router = APIRouter(prefix=JOBS_PREFIX, tags=["jobs"])


async def _events(svc: Services, request: Request, job_id: str, after: str) -> AsyncIterator[bytes]:
    async def job_json(start: streams.Start | None = None) -> str | None:
        record = await svc.store.get(job_id)
        if record is None:
            return None
        if start is not None:  # the record as of this start: resumed, or from nothing
            record.resumed_at_token = start.resumed_at or None
        return public(request, record).model_dump_json()

    try:
        async for event in svc.streams.follow(job_id, after):
            if event is None:
                yield b": keep-alive\n\n"
                continue
            entry = event.entry
            if isinstance(entry, streams.Output):
                data = json.dumps(
                    {"index": entry.index, "text": entry.text, "output_tokens": entry.output_tokens}
                )
                yield sse("output", data, event.id)
                continue
            start = entry if isinstance(entry, streams.Start) else None
            if (job := await job_json(start)) is None:
                raise JobGone(job_id)
            yield sse("start" if start else "completed", job, event.id)
    except JobGone:
        gone = ErrorBody(error=ErrorDetail(type="not_found", message=f"job {job_id} expired"))
        yield sse("error", gone.model_dump_json(exclude_none=True))


@router.get(
    "/{job_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        404: {"model": ErrorBody},
        422: {"model": ErrorBody},
        503: {"model": ErrorBody},
    }
    | AUTH_ERRORS,
)
async def stream_job(
    job_id: str,
    request: Request,
    svc: ServicesDep,
    caller: CallerDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    after = svc.streams.check_last_event_id(last_event_id)
    record = await owned_job(svc, caller, job_id)
    svc.streams.admit()
    if record.status.is_terminal() and not await svc.streams.has_stream(job_id):
        # Ended more than GENQ_STREAM_KEEP_S ago (its stream dropped): just the end.
        async def done() -> AsyncIterator[bytes]:
            yield sse("completed", public(request, record).model_dump_json())

        return StreamingResponse(done(), media_type="text/event-stream", headers=SSE_HEADERS)
    return StreamingResponse(
        _events(svc, request, job_id, after), media_type="text/event-stream", headers=SSE_HEADERS
    )
