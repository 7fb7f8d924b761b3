"""The OpenAI-compatible front: ``POST /v1/chat/completions`` and ``POST /v1/completions``,
through the queue (``GET /v1/models`` is api.routes.models).

Each request is an ordinary job (its record, latencies, Flower entry and metrics; its id in the
``X-Genq-Job-Id`` header and in the response's ``id``): submitted, then waited for (non-streaming)
or followed on its output stream (``stream: true``, OpenAI's chunks as SSE, ``data: [DONE]`` at
the end). A client that disconnects does not cancel the job: its result stays readable at
``/v1/jobs/{id}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from api.auth import AUTH_ERRORS, CallerDep
from api.deps import Services, ServicesDep
from api.errors import ApiError
from api.job_stream import JobGone
from api.openai_models import (
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatCompletionRequest,
    ChatLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Usage,
)
from api.responses import SSE_HEADERS, job_url, succeeded
from api.submit import new_job_id, submit_job
from genq.contract.models import ModelError, UnknownModel
from genq.contract.schemas import Completion as JobCompletion
from genq.contract.schemas import ErrorBody, JobInput, JobRecord, JobStatus
from genq.store import streams

router = APIRouter(prefix="/v1", tags=["openai"])

_ERRORS = {s: {"model": ErrorBody} for s in (400, 404, 409, 413, 422, 429, 503, 504)} | AUTH_ERRORS


async def _model(svc: Services, asked: str | None) -> str:
    """The model the request names (None: the default), 404 as OpenAI answers for one not
    served here (genq's own routes answer 422)."""
    try:
        return await svc.models.resolve(asked)
    except UnknownModel as exc:
        raise ApiError(404, "model_not_found", str(exc)) from None
    except ModelError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


def _job_input(body: ChatCompletionRequest | CompletionRequest) -> JobInput:
    try:
        return body.to_input()
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        raise ApiError(422, "invalid_request", reasons) from None
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


def _usage(record: JobRecord) -> Usage:
    prompt = record.metrics.prompt_tokens or 0
    output = record.metrics.output_tokens or 0
    return Usage(prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output)


def _data(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


class _Chunks:
    """OpenAI's streaming chunks of one request, chat or text completion."""

    def __init__(self, chat: bool, record: JobRecord, model: str):
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + record.id
        self.created = int(record.created_at)
        self.model = model

    def chunk(
        self, text: str | None, finish_reason: str | None = None, role: bool = False
    ) -> bytes:
        if self.chat:
            delta: dict[str, str] = {} if text is None else {"content": text}
            if role:
                delta["role"] = "assistant"
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish_reason}
            choice["logprobs"] = None
            kind = "text_completion"
        return _data(
            {
                "id": self.id,
                "object": kind,
                "created": self.created,
                "model": self.model,
                "choices": [choice],
            }
        )

    def usage(self, usage: Usage) -> bytes:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return _data(
            {
                "id": self.id,
                "object": kind,
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage.model_dump(),
            }
        )


def _error(type_: str, message: str) -> bytes:
    return _data({"error": {"type": type_, "message": message}})


async def _stream(
    svc: Services, record: JobRecord, chunks: _Chunks, include_usage: bool
) -> AsyncIterator[bytes]:
    # The chat role rides on the first text, not ahead of it: a client (vllm bench serve) may
    # take the first chunk's arrival as the time to the first token.
    sent_text = False
    try:
        async for event in svc.streams.follow(record.id):
            if event is None:
                yield b": keep-alive\n\n"
                continue
            entry = event.entry
            if isinstance(entry, streams.Start) and sent_text and not entry.resumed_at:
                yield _error(
                    "worker_lost",
                    f"the worker running job {record.id} died and another restarted it; "
                    f"read its result at /v1/jobs/{record.id}",
                )
                break
            if isinstance(entry, streams.Output):
                yield chunks.chunk(entry.text, role=chunks.chat and not sent_text)
                sent_text = True
            elif isinstance(entry, streams.End):
                done = await svc.store.get(record.id)
                if done is None:
                    raise JobGone(record.id)
                if done.status is JobStatus.FAILED and done.error is not None:
                    yield _error(done.error.type, f"job {done.id} failed: {done.error.message}")
                    break
                reason = done.output.finish_reason if done.output else None
                if chunks.chat and not sent_text:
                    yield chunks.chunk("", role=True)
                yield chunks.chunk(None, reason or "abort")
                if include_usage:
                    yield chunks.usage(_usage(done))
    except JobGone:
        yield _error("not_found", f"job {record.id} expired")
    yield b"data: [DONE]\n\n"


async def _complete(
    svc: Services,
    request: Request,
    body: ChatCompletionRequest | CompletionRequest,
    chat: bool,
    owner: str | None,
) -> JSONResponse | StreamingResponse:
    model = await _model(svc, body.model)
    job_input = _job_input(body)
    if body.stream:
        svc.streams.admit()
    job_id = new_job_id()
    # Watched from before it exists: the wait below needs no first read (api.waiter).
    with svc.waiter.expecting(job_id) as expected:
        record, _ = await submit_job(svc, job_input, owner=owner, model=model, job_id=job_id)
        headers = {"X-Genq-Job-Id": record.id, "Location": job_url(request, record.id)}
        chunks = _Chunks(chat, record, model)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                _stream(svc, record, chunks, include_usage),
                media_type="text/event-stream",
                headers=SSE_HEADERS | headers,
            )
        timeout_s = svc.settings.generate_timeout_s
        done = succeeded(
            await svc.waiter.wait(record.id, timeout_s, expected),
            record.id,
            timeout_s,
            stopping=svc.waiter.draining,
        )
    output = done.output
    each = output.choices or [
        JobCompletion(
            index=0, text=output.text, finish_reason=output.finish_reason, logprobs=output.logprobs
        )
    ]
    response: ChatCompletion | Completion
    if chat:
        response = ChatCompletion(
            id=chunks.id,
            created=chunks.created,
            model=model,
            choices=[
                ChatChoice(
                    index=c.index,
                    message=ChatChoiceMessage(content=c.text),
                    finish_reason=c.finish_reason,
                    logprobs=ChatLogprobs.of(c.logprobs),
                )
                for c in each
            ],
            usage=_usage(done),
        )
    else:
        response = Completion(
            id=chunks.id,
            created=chunks.created,
            model=model,
            choices=[
                CompletionChoice(
                    index=c.index,
                    text=c.text,
                    finish_reason=c.finish_reason,
                    logprobs=CompletionLogprobs.of(c.logprobs),
                )
                for c in each
            ],
            usage=_usage(done),
        )
    return JSONResponse(response.model_dump(), headers=headers)


@router.post("/chat/completions", response_model=ChatCompletion, responses=_ERRORS)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, svc: ServicesDep, caller: CallerDep
) -> JSONResponse | StreamingResponse:
    """OpenAI's chat completions, as a genq job (``stream: true``: SSE chunks)."""
    return await _complete(svc, request, body, True, caller.key_name)


@router.post("/completions", response_model=Completion, responses=_ERRORS)
async def completions(
    body: CompletionRequest, request: Request, svc: ServicesDep, caller: CallerDep
) -> JSONResponse | StreamingResponse:
    """OpenAI's (legacy) text completions, as a genq job (``stream: true``: SSE chunks)."""
    return await _complete(svc, request, body, False, caller.key_name)
