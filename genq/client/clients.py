"""``Client`` and ``AsyncClient``: the same methods, blocking and awaited, on httpx."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from genq.client.errors import error_from_response
from genq.client.events import STREAM_IDLE_S, CompletedEvent, Deltas, JobEvent, Resume
from genq.contract.schemas import ChatMessage, JobPublic

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0
MAX_WAIT_S = 60  # the most the API blocks one request for (``Prefer: wait=N``)


def job_body(
    prompt: str | None,
    messages: list[ChatMessage] | list[dict[str, str]] | None,
    webhook: str | None,
    webhook_events: list[str] | None,
    metadata: dict[str, Any] | None,
    deadline_s: float | None,
    sampling: dict[str, Any],
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/jobs`` (genq.contract.schemas.JobCreate), without unset fields.
    The API validates it (InvalidRequest): the client does not second-guess the server's rules."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "messages": None
        if messages is None
        else [m.model_dump() if isinstance(m, BaseModel) else m for m in messages],
        "webhook": webhook,
        "webhook_events_filter": webhook_events,
        "metadata": metadata,
        "deadline_s": deadline_s,
        **sampling,
    }
    return {k: v for k, v in body.items() if v is not None}


class _Deadline:
    """A wait of ``timeout`` seconds (None: no limit), spent in requests of at most MAX_WAIT_S."""

    def __init__(self, timeout: float | None) -> None:
        self.end = None if timeout is None else time.monotonic() + timeout

    def expired(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def next_wait(self) -> int | None:
        """``Prefer: wait=N`` for the next request (whole seconds); None once expired."""
        if self.end is None:
            return MAX_WAIT_S
        left = self.end - time.monotonic()
        return None if left <= 0 else min(MAX_WAIT_S, math.ceil(left))


def _wait_of(wait: float | bool | None) -> _Deadline | None:
    """``submit(wait=...)``: None/False no wait, True until finished, a number at most that."""
    if wait is None or wait is False:
        return None
    return _Deadline(None if wait is True else float(wait))


def _job_path(job_id: str, action: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{action}"


# A server that ignores ``Prefer: wait`` answers at once: wait() then polls this often.
_POLL_S = 0.25


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None, timeout: float) -> None:
        self.base_url = (base_url or os.environ.get("GENQ_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("GENQ_API_KEY")
        self.timeout = timeout
        self.headers = {"User-Agent": "genq-client"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def _request_args(self, wait: int | None, headers: dict[str, str] | None) -> dict[str, Any]:
        headers = dict(headers or {})
        timeout: float | httpx.Timeout = self.timeout
        if wait is not None:
            headers["Prefer"] = f"wait={wait}"
            timeout = httpx.Timeout(self.timeout, read=self.timeout + wait)
        return {"headers": headers, "timeout": timeout}

    def _stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_IDLE_S))


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise error_from_response(response)
    return response


def _job(response: httpx.Response) -> JobPublic:
    return JobPublic.model_validate_json(_checked(response).content)


class Client(_Base):
    """Blocking client. ``base_url`` defaults to ``GENQ_URL`` (else http://127.0.0.1:8000),
    ``api_key`` to ``GENQ_API_KEY``; ``timeout`` is per request, in seconds (waits add theirs).
    ``transport`` is httpx's (tests pass a fake server)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        wait: int | None = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        args = self._request_args(wait, headers)
        return _checked(self._http.request(method, path, json=json, **args))

    def submit(
        self,
        prompt: str | None = None,
        *,
        messages: list[ChatMessage] | list[dict[str, str]] | None = None,
        wait: float | bool | None = None,
        webhook: str | None = None,
        webhook_events: list[str] | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        deadline_s: float | None = None,
        **sampling: Any,
    ) -> JobPublic:
        """Submit a job (``prompt``, or chat ``messages``) with sampling fields (``max_tokens``,
        ``temperature``, ...) and any other field of ``POST /v1/jobs`` (``model``, ``raw``,
        ``json_schema``/``regex``/``choice``, ``n``, ``logprobs``). ``wait``: True
        until it is finished, a number of seconds at most (the job as it is then: check ``status``),
        None to return at once (queued)."""
        body = job_body(prompt, messages, webhook, webhook_events, metadata, deadline_s, sampling)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        deadline = _wait_of(wait)
        first_wait = None if deadline is None else deadline.next_wait()
        job = _job(self._send("POST", "/v1/jobs", wait=first_wait, headers=headers, json=body))
        if deadline is None or job.status.is_terminal() or deadline.expired():
            return job
        return self._wait(job.id, deadline)

    def get(self, job_id: str, *, wait: int | None = None) -> JobPublic:
        """The job; with ``wait`` (seconds, at most 60) the API answers once it is finished or
        that time has passed."""
        return _job(self._send("GET", _job_path(job_id), wait=wait))

    def wait(self, job_id: str, timeout: float | None = None) -> JobPublic:
        """The job once it is finished, or as it is after ``timeout`` seconds (None: no limit)."""
        return self._wait(job_id, _Deadline(timeout))

    def _wait(self, job_id: str, deadline: _Deadline) -> JobPublic:
        while True:
            asked = time.monotonic()
            job = self.get(job_id, wait=deadline.next_wait())
            if job.status.is_terminal() or deadline.expired():
                return job
            if time.monotonic() - asked < _POLL_S:
                time.sleep(_POLL_S)

    def cancel(self, job_id: str) -> JobPublic:
        """Cancel the job: ``canceled`` if it stopped within the API's wait, else still
        ``processing`` (stopping). Conflict if it had finished."""
        return _job(self._send("POST", _job_path(job_id, "/cancel")))

    def stream_events(self, job_id: str, *, last_event_id: str | None = None) -> Iterator[JobEvent]:
        """The job's events (StartEvent, OutputEvent, CompletedEvent) until it is finished,
        reconnecting after a dropped connection with ``Last-Event-ID``. A job that is already
        finished gives its events at once."""
        state = Resume(last_event_id)
        path = _job_path(job_id, "/stream")
        while True:
            error: Exception | None = None
            try:
                with self._http.stream(
                    "GET", path, headers=state.headers(), timeout=self._stream_timeout()
                ) as response:
                    if response.is_error:
                        response.read()
                        raise error_from_response(response)
                    for line in response.iter_lines():
                        if (event := state.feed(line)) is not None:
                            yield event
                            if isinstance(event, CompletedEvent):
                                return
            except httpx.TransportError as exc:
                error = exc
            time.sleep(state.reconnect_delay(error))

    def stream(self, job_id: str) -> Iterator[str]:
        """The job's text as it is generated, in pieces that join to its final ``output.text``.
        It ends when the job does, whatever its status: ``get()`` tells which."""
        deltas = Deltas(job_id)
        for event in self.stream_events(job_id):
            if text := deltas.take(event):
                yield text


class AsyncClient(_Base):
    """The asyncio twin of Client: the same methods, awaited; streams are async iterators."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        wait: int | None = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        args = self._request_args(wait, headers)
        return _checked(await self._http.request(method, path, json=json, **args))

    async def submit(
        self,
        prompt: str | None = None,
        *,
        messages: list[ChatMessage] | list[dict[str, str]] | None = None,
        wait: float | bool | None = None,
        webhook: str | None = None,
        webhook_events: list[str] | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        deadline_s: float | None = None,
        **sampling: Any,
    ) -> JobPublic:
        """See Client.submit."""
        body = job_body(prompt, messages, webhook, webhook_events, metadata, deadline_s, sampling)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        deadline = _wait_of(wait)
        first_wait = None if deadline is None else deadline.next_wait()
        response = await self._send("POST", "/v1/jobs", wait=first_wait, headers=headers, json=body)
        job = _job(response)
        if deadline is None or job.status.is_terminal() or deadline.expired():
            return job
        return await self._wait(job.id, deadline)

    async def get(self, job_id: str, *, wait: int | None = None) -> JobPublic:
        """See Client.get."""
        return _job(await self._send("GET", _job_path(job_id), wait=wait))

    async def wait(self, job_id: str, timeout: float | None = None) -> JobPublic:
        """See Client.wait."""
        return await self._wait(job_id, _Deadline(timeout))

    async def _wait(self, job_id: str, deadline: _Deadline) -> JobPublic:
        while True:
            asked = time.monotonic()
            job = await self.get(job_id, wait=deadline.next_wait())
            if job.status.is_terminal() or deadline.expired():
                return job
            if time.monotonic() - asked < _POLL_S:
                await asyncio.sleep(_POLL_S)

    async def cancel(self, job_id: str) -> JobPublic:
        """See Client.cancel."""
        return _job(await self._send("POST", _job_path(job_id, "/cancel")))

    async def stream_events(
        self, job_id: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[JobEvent]:
        """See Client.stream_events."""
        state = Resume(last_event_id)
        path = _job_path(job_id, "/stream")
        while True:
            error: Exception | None = None
            try:
                async with self._http.stream(
                    "GET", path, headers=state.headers(), timeout=self._stream_timeout()
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise error_from_response(response)
                    async for line in response.aiter_lines():
                        if (event := state.feed(line)) is not None:
                            yield event
                            if isinstance(event, CompletedEvent):
                                return
            except httpx.TransportError as exc:
                error = exc
            await asyncio.sleep(state.reconnect_delay(error))

    async def stream(self, job_id: str) -> AsyncIterator[str]:
        """See Client.stream."""
        deltas = Deltas(job_id)
        async for event in self.stream_events(job_id):
            if text := deltas.take(event):
                yield text
