"""genq.client against a fake server (httpx.MockTransport): what it sends, how error answers
map to exceptions, waiting, and streams that drop and resume. The real API: tests/e2e/test_client.py.

tests/client needs only what `pip install genq` (no extra) installs, plus pytest:
tests/e2e/test_client_alone.py runs it in such a venv, so nothing here may import a server part.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from genq.client import (
    AsyncClient,
    Client,
    CompletedEvent,
    Conflict,
    GenqError,
    InvalidRequest,
    NotFound,
    OutputEvent,
    RateLimited,
    ServerError,
    StartEvent,
    StreamRestarted,
    Unauthorized,
)
from genq.client import events as client_events
from genq.contract.schemas import (
    JobInput,
    JobOutput,
    JobPublic,
    JobRecord,
    JobStatus,
    SamplingOptions,
)

JOB_ID = "0123456789abcdef0123456789abcdef"


def job(status: str = "queued", text: str | None = None) -> dict:
    record = JobRecord(
        id=JOB_ID,
        status=JobStatus(status),
        created_at=time.time(),
        input=JobInput(prompt="hi", sampling=SamplingOptions()),
        output=None if text is None else JobOutput(text=text),
    )
    return json.loads(
        JobPublic.from_record(record, f"http://fake/v1/jobs/{JOB_ID}").model_dump_json()
    )


def error(status: int, type_: str, message: str, headers: dict | None = None) -> httpx.Response:
    body = {"error": {"type": type_, "message": message}}
    return httpx.Response(status, json=body, headers=headers)


Handler = Callable[[httpx.Request], httpx.Response]


class FakeServer:
    """Answers each request with the next of its scripted answers; keeps the requests."""

    def __init__(self, *answers: httpx.Response | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer

    def client(self, **kw) -> Client:
        return Client("http://fake", transport=httpx.MockTransport(self), **kw)

    def async_client(self, **kw) -> AsyncClient:
        return AsyncClient("http://fake", transport=httpx.MockTransport(self), **kw)


# -- requests -------------------------------------------------------------------------------------


def test_submit_sends_only_the_fields_given_and_returns_the_api_model() -> None:
    server = FakeServer(httpx.Response(202, json=job()))
    with server.client(api_key="k-123") as client:
        result = client.submit(
            "hi",
            max_tokens=8,
            temperature=0.5,
            idempotency_key="order-1",
            metadata={"t": 1},
            model="llama-8b",
        )
    assert isinstance(result, JobPublic) and result.status is JobStatus.QUEUED
    (request,) = server.requests
    assert request.method == "POST" and request.url.path == "/v1/jobs"
    assert json.loads(request.content) == {
        "prompt": "hi",
        "max_tokens": 8,
        "temperature": 0.5,
        "metadata": {"t": 1},
        "model": "llama-8b",
    }
    assert request.headers["authorization"] == "Bearer k-123"
    assert request.headers["idempotency-key"] == "order-1"
    assert "prefer" not in request.headers


def test_chat_messages_and_webhook_events_use_the_api_names() -> None:
    server = FakeServer(httpx.Response(202, json=job()))
    with server.client() as client:
        client.submit(
            messages=[{"role": "user", "content": "hi"}],
            webhook="https://example.com/hook",
            webhook_events=["start", "completed"],
        )
    assert json.loads(server.requests[0].content) == {
        "messages": [{"role": "user", "content": "hi"}],
        "webhook": "https://example.com/hook",
        "webhook_events_filter": ["start", "completed"],
    }


def test_url_and_key_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENQ_URL", "http://from-env:9000/")
    monkeypatch.setenv("GENQ_API_KEY", "env-key")
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=job("succeeded", "x"))

    with Client(transport=httpx.MockTransport(server)) as client:
        client.get(JOB_ID)
    assert str(seen[0].url) == f"http://from-env:9000/v1/jobs/{JOB_ID}"
    assert seen[0].headers["authorization"] == "Bearer env-key"


def test_job_ids_are_quoted_into_the_path() -> None:
    server = FakeServer(error(404, "not_found", "no job"))
    with server.client() as client, pytest.raises(NotFound):
        client.get("../../metrics")
    assert server.requests[0].url.raw_path == b"/v1/jobs/..%2F..%2Fmetrics"


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "cls", "type_"),
    [
        (error(404, "not_found", "no job with id 'x'"), NotFound, "not_found"),
        (error(401, "unauthorized", "missing API key"), Unauthorized, "unauthorized"),
        (error(409, "conflict", "job x already succeeded"), Conflict, "conflict"),
        (error(413, "payload_too_large", "too big"), InvalidRequest, "payload_too_large"),
        (error(503, "unavailable", "store down", {"Retry-After": "1"}), ServerError, "unavailable"),
        (error(418, "teapot", "short and stout"), GenqError, "teapot"),
    ],
)
def test_error_answers_raise_their_class_with_the_api_body(
    answer: httpx.Response, cls: type[GenqError], type_: str
) -> None:
    with FakeServer(answer).client() as client, pytest.raises(cls) as raised:
        client.get(JOB_ID)
    assert type(raised.value) is cls
    assert raised.value.status == answer.status_code
    assert raised.value.type == type_
    assert raised.value.message == answer.json()["error"]["message"]
    assert raised.value.body == answer.json()
    assert answer.json()["error"]["message"] in str(raised.value)


def test_a_422_carries_the_details() -> None:
    details = [{"loc": ["body", "max_tokens"], "msg": "too small", "type": "greater_than_equal"}]
    body = {
        "error": {"type": "invalid_request", "message": "max_tokens: too small", "details": details}
    }
    with FakeServer(httpx.Response(422, json=body)).client() as client:
        with pytest.raises(InvalidRequest) as raised:
            client.submit("hi", max_tokens=0)
    assert raised.value.body["error"]["details"] == details


def test_a_429_says_when_to_retry() -> None:
    answer = error(429, "overloaded", "the queue is full", {"Retry-After": "7"})
    with FakeServer(answer).client() as client, pytest.raises(RateLimited) as raised:
        client.submit("hi")
    assert raised.value.retry_after == 7.0 and raised.value.type == "overloaded"


def test_an_error_answer_that_is_not_the_api_body_is_kept_whole() -> None:
    answer = httpx.Response(502, text="<html>Bad Gateway from the proxy</html>")
    with FakeServer(answer).client() as client, pytest.raises(ServerError) as raised:
        client.get(JOB_ID)
    assert raised.value.type == "bad_gateway"
    assert raised.value.message == "<html>Bad Gateway from the proxy</html>"
    assert raised.value.body == "<html>Bad Gateway from the proxy</html>"


# -- waiting --------------------------------------------------------------------------------------


def test_wait_asks_the_api_to_hold_each_request_until_the_job_is_finished() -> None:
    server = FakeServer(
        httpx.Response(200, json=job("processing", "par")),
        httpx.Response(200, json=job("succeeded", "partial and done")),
    )
    with server.client() as client:
        done = client.wait(JOB_ID)
    assert done.status is JobStatus.SUCCEEDED and done.output.text == "partial and done"
    assert [r.headers["prefer"] for r in server.requests] == ["wait=60", "wait=60"]


def test_wait_with_a_timeout_returns_the_unfinished_job_when_it_is_spent() -> None:
    def slow(_: httpx.Request) -> httpx.Response:
        time.sleep(0.3)  # as the API holding the request for its wait
        return httpx.Response(200, json=job("processing"))

    server = FakeServer(*[slow] * 10)
    with server.client() as client:
        result = client.wait(JOB_ID, timeout=0.5)
    assert result.status is JobStatus.PROCESSING
    assert [r.headers["prefer"] for r in server.requests] == ["wait=1", "wait=1"]


def test_submit_with_wait_goes_on_waiting_past_what_one_request_may() -> None:
    server = FakeServer(
        httpx.Response(202, json=job("processing")),
        httpx.Response(200, json=job("succeeded", "done")),
    )
    with server.client() as client:
        result = client.submit("hi", wait=True)
    assert result.status is JobStatus.SUCCEEDED
    assert [(r.method, r.headers["prefer"]) for r in server.requests] == [
        ("POST", "wait=60"),
        ("GET", "wait=60"),
    ]


def test_cancel_returns_the_job_and_a_finished_one_is_a_conflict() -> None:
    server = FakeServer(
        httpx.Response(200, json=job("canceled", "par")),
        error(409, "conflict", f"job {JOB_ID} already canceled"),
    )
    with server.client() as client:
        assert client.cancel(JOB_ID).status is JobStatus.CANCELED
        with pytest.raises(Conflict):
            client.cancel(JOB_ID)
    assert server.requests[0].url.path == f"/v1/jobs/{JOB_ID}/cancel"


# -- streams --------------------------------------------------------------------------------------


def sse(event: str, data: dict, id_: str) -> bytes:
    return f"id: {id_}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


def output(i: int, text: str, id_: str) -> bytes:
    return sse("output", {"index": i, "text": text, "output_tokens": i + 1}, id_)


class Dropping(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that sends its chunks, then loses the connection (unless ``drop`` is
    False: then it ends cleanly)."""

    def __init__(self, *chunks: bytes, drop: bool = True) -> None:
        self.chunks, self.drop = chunks, drop

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.drop:
            raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.drop:
            raise httpx.ReadError("connection reset")


def sse_response(*chunks: bytes, drop: bool = False) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Dropping(*chunks, drop=drop)
    )


@pytest.fixture(autouse=True)
def quick_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_events, "RECONNECT_DELAY_S", 0.01)


def dropped_then_resumed() -> FakeServer:
    """A stream lost after two pieces (one split across chunks); the server resends the second
    on resume, then ends it."""
    return FakeServer(
        sse_response(
            b": keep-alive\n\n",
            sse("start", job("processing"), "1-0"),
            output(0, "Once", "2-0"),
            output(1, " upon", "3-0")[:9],
            output(1, " upon", "3-0")[9:],
            drop=True,
        ),
        sse_response(
            output(1, " upon", "3-0"),  # the server may repeat the last one: not handed twice
            output(2, " a time", "4-0"),
            sse("completed", job("succeeded", "Once upon a time"), "5-0"),
        ),
    )


def test_a_dropped_stream_resumes_after_the_last_event_and_joins_to_the_final_text() -> None:
    server = dropped_then_resumed()
    with server.client() as client:
        deltas = list(client.stream(JOB_ID))
    assert deltas == ["Once", " upon", " a time"]
    first, second = server.requests
    assert first.url.path == f"/v1/jobs/{JOB_ID}/stream"
    assert "last-event-id" not in first.headers
    assert second.headers["last-event-id"] == "3-0"


def test_stream_events_are_typed() -> None:
    with dropped_then_resumed().client() as client:
        events = list(client.stream_events(JOB_ID))
    assert [type(e) for e in events] == [
        StartEvent,
        OutputEvent,
        OutputEvent,
        OutputEvent,
        OutputEvent,
        CompletedEvent,
    ]
    assert events[1] == OutputEvent(id="2-0", index=0, text="Once", output_tokens=1)
    assert events[-1].job.output.text == "Once upon a time"


def test_a_stream_resumes_from_a_given_event_id() -> None:
    server = FakeServer(sse_response(sse("completed", job("succeeded", "x"), "9-0")))
    with server.client() as client:
        list(client.stream_events(JOB_ID, last_event_id="8-0"))
    assert server.requests[0].headers["last-event-id"] == "8-0"


def test_a_restarted_job_with_the_same_text_hands_out_nothing_twice() -> None:
    server = FakeServer(
        sse_response(
            sse("start", job("processing"), "1"),
            output(0, "Paris", "2"),
            sse("start", job("processing"), "3"),  # the worker was lost: it runs again
            output(0, "Pa", "4"),
            output(1, "ris is", "5"),
            output(2, " big", "6"),
            sse("completed", job("succeeded", "Paris is big"), "7"),
        )
    )
    with server.client() as client:
        assert "".join(client.stream(JOB_ID)) == "Paris is big"


def test_a_restarted_job_whose_text_changed_raises() -> None:
    server = FakeServer(
        sse_response(
            sse("start", job("processing"), "1"),
            output(0, "Paris", "2"),
            sse("start", job("processing"), "3"),
            output(0, "Lyon", "4"),
        )
    )
    with server.client() as client, pytest.raises(StreamRestarted):
        list(client.stream(JOB_ID))


def test_the_final_text_fills_in_what_the_pieces_missed() -> None:
    server = FakeServer(
        sse_response(output(0, "Hel", "1"), sse("completed", job("canceled", "Hello"), "2"))
    )
    with server.client() as client:
        assert list(client.stream(JOB_ID)) == ["Hel", "lo"]


def test_an_error_event_raises_the_api_error() -> None:
    body = {"error": {"type": "not_found", "message": "job expired"}}
    server = FakeServer(sse_response(output(0, "a", "1"), sse("error", body, "2")))
    with server.client() as client, pytest.raises(GenqError) as raised:
        list(client.stream(JOB_ID))
    assert raised.value.status is None and raised.value.type == "not_found"
    assert raised.value.body == body


def test_a_stream_for_an_unknown_job_is_not_found() -> None:
    with FakeServer(error(404, "not_found", "no job")).client() as client:
        with pytest.raises(NotFound):
            list(client.stream(JOB_ID))


def test_a_stream_that_keeps_failing_gives_up_with_the_network_error() -> None:
    tries = client_events.STREAM_RECONNECTS + 1
    server = FakeServer(*[lambda _: sse_response(drop=True)] * tries)
    with server.client() as client, pytest.raises(httpx.ReadError):
        list(client.stream(JOB_ID))
    assert len(server.requests) == tries


def test_the_streams_retry_field_sets_the_reconnect_delay() -> None:
    server = FakeServer(
        sse_response(b"retry: 300\n\n", output(0, "a", "1"), drop=True),
        sse_response(sse("completed", job("succeeded", "a"), "2")),
    )
    started = time.monotonic()
    with server.client() as client:
        assert list(client.stream(JOB_ID)) == ["a"]
    assert time.monotonic() - started >= 0.3


# -- the async client -----------------------------------------------------------------------------


def test_the_async_client_submits_waits_and_maps_errors() -> None:
    server = FakeServer(
        httpx.Response(202, json=job("processing")),
        httpx.Response(200, json=job("succeeded", "done")),
        error(404, "not_found", "no job"),
        httpx.Response(200, json=job("canceled")),
    )

    async def main() -> None:
        async with server.async_client(api_key="k") as client:
            done = await client.submit("hi", wait=30)
            assert done.status is JobStatus.SUCCEEDED and done.output.text == "done"
            with pytest.raises(NotFound):
                await client.get("nope")
            assert (await client.cancel(JOB_ID)).status is JobStatus.CANCELED

    asyncio.run(main())
    assert [r.headers.get("prefer") for r in server.requests] == ["wait=30", "wait=30", None, None]
    assert all(r.headers["authorization"] == "Bearer k" for r in server.requests)


def test_the_async_stream_resumes_like_the_sync_one() -> None:
    server = dropped_then_resumed()

    async def main() -> list[str]:
        async with server.async_client() as client:
            return [delta async for delta in client.stream(JOB_ID)]

    assert asyncio.run(main()) == ["Once", " upon", " a time"]
    assert server.requests[1].headers["last-event-id"] == "3-0"


# -- weight ---------------------------------------------------------------------------------------


def test_the_client_loads_no_server_side_module() -> None:
    code = (
        "import sys\n"
        "import genq.client, genq.cli.main\n"
        "heavy = ('torch', 'vllm', 'fastapi', 'celery', 'api', 'worker', 'redis')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
