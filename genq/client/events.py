"""Reading a job's stream (``GET /v1/jobs/{id}/stream``): the typed events, where to resume
after a dropped connection, and the text deltas of ``stream()``. No I/O: the sync and the async
client share it."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from genq.client.errors import GenqError, StreamRestarted
from genq.client.sse import SseEvent, SseParser
from genq.contract.schemas import ErrorBody, JobPublic

# A stream silent this long (keep-alive comments included) is taken for dropped and resumed.
STREAM_IDLE_S = 60.0
STREAM_RECONNECTS = 5  # reconnections in a row without an event before a stream gives up
RECONNECT_DELAY_S = 1.0  # unless the stream said otherwise (its ``retry:`` field)


class StartEvent(BaseModel):
    """The job started running; a second one means it runs again after its worker was lost: its
    text starts again from nothing, or, when ``job.resumed_at_token`` is set, goes on from the
    text so far."""

    type: Literal["start"] = "start"
    id: str | None = None  # the event's id (resume after it with Last-Event-ID)
    job: JobPublic


class OutputEvent(BaseModel):
    """A piece of text: ``index`` counts 0, 1, 2... within one run of the job."""

    type: Literal["output"] = "output"
    id: str | None = None
    index: int
    text: str
    output_tokens: int | None = None


class CompletedEvent(BaseModel):
    """The job is terminal (succeeded, failed or canceled); the stream ends."""

    type: Literal["completed"] = "completed"
    id: str | None = None
    job: JobPublic


JobEvent = StartEvent | OutputEvent | CompletedEvent


def job_event(sse: SseEvent) -> JobEvent | None:
    """The typed event of one SSE event; None for an event this client does not know. An
    ``error`` event raises its GenqError."""
    data = json.loads(sse.data)
    if sse.event == "start":
        return StartEvent(id=sse.id, job=JobPublic.model_validate(data))
    if sse.event == "output":
        return OutputEvent.model_validate({**data, "id": sse.id})
    if sse.event == "completed":
        return CompletedEvent(id=sse.id, job=JobPublic.model_validate(data))
    if sse.event == "error":
        raise _stream_error(data)
    return None


def _stream_error(data: Any) -> GenqError:
    try:
        detail = ErrorBody.model_validate(data).error
    except ValidationError:
        return GenqError(None, "stream_error", str(data), data)
    return GenqError(None, detail.type, detail.message, data)


class Resume:
    """One stream's reading state across its connections: where to resume, how many
    reconnections in a row failed, how long to wait before the next."""

    def __init__(self, last_event_id: str | None) -> None:
        self.parser = SseParser(last_event_id)
        self.failures = 0

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.parser.last_event_id is not None:
            headers["Last-Event-ID"] = self.parser.last_event_id
        return headers

    def feed(self, line: str) -> JobEvent | None:
        sse = self.parser.feed(line)
        if sse is None:
            return None
        self.failures = 0
        return job_event(sse)

    def reconnect_delay(self, error: Exception | None) -> float:
        """Seconds to wait before reconnecting; raises (``error``, or a GenqError when the stream
        just ended early) once too many tries in a row brought nothing."""
        self.failures += 1
        if self.failures > STREAM_RECONNECTS:
            if error is not None:
                raise error
            raise GenqError(None, "stream_ended", "the stream kept ending before the job did")
        retry_ms = self.parser.retry_ms
        return RECONNECT_DELAY_S if retry_ms is None else retry_ms / 1000


class Deltas:
    """``stream()``: the text of the job's current run, each piece handed out once. Pieces seen
    before (a resumed stream) are skipped. After a restart the new run's text is held back until
    it passes what was handed out; if it disagrees, StreamRestarted."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.given = ""
        self.run = ""
        self.next_index = 0

    def take(self, event: JobEvent) -> str:
        if isinstance(event, StartEvent):
            if not event.job.resumed_at_token:  # a run from nothing
                self.run, self.next_index = "", 0
            return ""
        if isinstance(event, OutputEvent):
            if event.index < self.next_index:
                return ""
            self.next_index = event.index + 1
            self.run += event.text
        elif event.job.output is not None:
            self.run = event.job.output.text  # the final text decides
        return self._new()

    def _new(self) -> str:
        if self.run.startswith(self.given):
            delta, self.given = self.run[len(self.given) :], self.run
            return delta
        if self.given.startswith(self.run):
            return ""  # a restarted run still catching up with what was handed out
        raise StreamRestarted(
            None,
            "stream_restarted",
            f"job {self.job_id} ran again after its worker was lost and its text changed; "
            "read the final text with get()",
        )
