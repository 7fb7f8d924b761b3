"""genq.client and the ``genq submit | get | cancel`` CLI against the real stack (real API, Redis,
worker and vLLM engine): waits, streams, cancel and errors as a caller sees them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from genq.client import (
    AsyncClient,
    Client,
    CompletedEvent,
    Conflict,
    InvalidRequest,
    NotFound,
    OutputEvent,
    StartEvent,
)
from genq.contract.schemas import JobPublic, JobStatus
from tests.e2e.conftest import Stack
from worker.model_files import DEFAULT_MODEL_NAME

pytestmark = pytest.mark.engine

UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
# A job that runs far longer than any test waits for it (min_tokens: no early stop): each test
# that starts one cancels it.
# Some dozens of tokens, never none (a raw prompt may well end at once).
STORY = {"prompt": "Once upon a time", "max_tokens": 48, "min_tokens": 32}
LONG = {"prompt": "Tell me a very long story.", "max_tokens": 4000, "min_tokens": 4000}


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.api, timeout=30) as client:
        yield client


def running(client: Client, job: JobPublic) -> JobPublic:
    """The job once it has generated something."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(job.id)
        if job.status is JobStatus.PROCESSING and job.output is not None and job.output.text:
            return job
        assert not job.status.is_terminal(), job
        time.sleep(0.1)
    raise TimeoutError(f"job {job.id} did not start")


def test_submit_get_wait(client: Client) -> None:
    job = client.submit("Say hi.", max_tokens=8, metadata={"case": "client"})
    assert job.status in (JobStatus.QUEUED, JobStatus.PROCESSING)
    assert client.get(job.id).id == job.id
    done = client.wait(job.id, timeout=60)
    assert done.status is JobStatus.SUCCEEDED
    assert done.output is not None and done.output.text
    assert 0 < done.metrics.output_tokens <= 8
    assert done.input.metadata == {"case": "client"}
    # submit(wait=...) answers with the finished job in one call.
    waited = client.submit("Say hi.", max_tokens=8, wait=60)
    assert waited.status is JobStatus.SUCCEEDED and waited.output.text


def test_wait_with_a_timeout_shorter_than_the_job_then_cancel_it(client: Client) -> None:
    job = client.submit(**LONG)
    started = time.monotonic()
    unfinished = client.wait(job.id, timeout=1.5)
    waited = time.monotonic() - started
    assert unfinished.status in (JobStatus.QUEUED, JobStatus.PROCESSING)
    assert 1.5 <= waited < 4, waited  # Prefer: wait is in whole seconds: 2 s here

    running(client, job)
    canceled = client.cancel(job.id)
    if canceled.status is not JobStatus.CANCELED:  # 202: still stopping
        canceled = client.wait(job.id, timeout=30)
    assert canceled.status is JobStatus.CANCELED
    assert canceled.output is not None and canceled.output.text  # its partial text
    assert canceled.metrics.output_tokens < 4000
    with pytest.raises(Conflict) as raised:
        client.cancel(job.id)
    assert raised.value.status == 409 and raised.value.type == "conflict"


def test_stream_deltas_join_to_the_final_text(client: Client) -> None:
    job = client.submit(**STORY)
    deltas = list(client.stream(job.id))
    final = client.get(job.id)
    assert final.status is JobStatus.SUCCEEDED, final
    assert len(deltas) > 1 and all(deltas)
    assert "".join(deltas) == final.output.text

    # Read again, now that it is finished: every event, in order.
    events = list(client.stream_events(job.id))
    assert isinstance(events[0], StartEvent) and isinstance(events[-1], CompletedEvent)
    outputs = [e for e in events if isinstance(e, OutputEvent)]
    assert [e.index for e in outputs] == list(range(len(outputs)))
    assert "".join(e.text for e in outputs) == final.output.text
    assert outputs[-1].output_tokens == final.metrics.output_tokens
    assert events[-1].job.model_dump(exclude={"webhook_deliveries"}) == final.model_dump(
        exclude={"webhook_deliveries"}
    )


def test_a_stream_resumes_after_the_last_event_id(client: Client) -> None:
    job = client.submit(**STORY)
    first: list[OutputEvent] = []
    for event in client.stream_events(job.id):
        if isinstance(event, OutputEvent):
            first.append(event)
            if len(first) == 2:
                break  # the reader goes away
    rest = list(client.stream_events(job.id, last_event_id=first[-1].id))
    assert isinstance(rest[-1], CompletedEvent)
    outputs = first + [e for e in rest if isinstance(e, OutputEvent)]
    assert [e.index for e in outputs] == list(range(len(outputs)))
    assert "".join(e.text for e in outputs) == rest[-1].job.output.text


def test_errors_are_exceptions_with_the_api_body(client: Client) -> None:
    with pytest.raises(NotFound) as raised:
        client.get(UNKNOWN_ID)
    assert raised.value.status == 404 and raised.value.type == "not_found"
    assert UNKNOWN_ID in raised.value.message
    with pytest.raises(NotFound):
        list(client.stream(UNKNOWN_ID))
    with pytest.raises(InvalidRequest) as raised:
        client.submit("hi", max_tokens=0)
    assert raised.value.status == 422 and raised.value.type == "invalid_request"
    assert "max_tokens" in raised.value.message
    assert raised.value.body["error"]["details"][0]["loc"] == ["body", "max_tokens"]
    with pytest.raises(InvalidRequest, match="exactly one"):
        client.submit()


def test_the_async_client(stack: Stack) -> None:
    async def main() -> None:
        async with AsyncClient(stack.api) as client:
            done = await client.submit(
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                max_tokens=16,
                wait=True,
            )
            assert done.status is JobStatus.SUCCEEDED and done.output.text

            job = await client.submit(**STORY)
            deltas = [d async for d in client.stream(job.id)]
            final = await client.wait(job.id, timeout=30)
            assert final.status is JobStatus.SUCCEEDED
            assert "".join(deltas) == final.output.text

            long = await client.submit(**LONG)
            assert (await client.wait(long.id, timeout=1)).status.is_terminal() is False
            await client.cancel(long.id)
            assert (await client.wait(long.id, timeout=30)).status is JobStatus.CANCELED

            with pytest.raises(NotFound):
                await client.get(UNKNOWN_ID)
            with pytest.raises(InvalidRequest):
                await client.submit("hi", temperature=9)

    asyncio.run(main())


# -- the CLI --------------------------------------------------------------------------------------


def genq(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI. One that hangs (in one CI run, ``cancel`` never answered in 120 s, though its
    every request has a 30 s timeout) is made to print where: faulthandler dumps its threads'
    stacks on SIGABRT, and the failure shows them beside the API's last log lines."""
    command = [sys.executable, "-m", "genq.cli.main", *args, "--url", stack.api]
    env = os.environ | {"PYTHONFAULTHANDLER": "1"}
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as cli:
        try:
            out, err = cli.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            cli.send_signal(signal.SIGABRT)
            out, err = cli.communicate()
            api_log = (stack.logs / "api.log").read_text(errors="replace").splitlines()[-40:]
            pytest.fail(
                f"genq {' '.join(args)} hung for 120 s; its stacks:\n{err}\n"
                "the API's last log lines:\n" + "\n".join(api_log)
            )
    return subprocess.CompletedProcess(command, cli.returncode, out, err)


def test_cli_submit_wait_then_get(stack: Stack, client: Client) -> None:
    model = ("--model", DEFAULT_MODEL_NAME)
    done = genq(stack, "submit", "Say hi.", "--wait", "--max-tokens", "8", *model, "--json")
    assert done.returncode == 0, done.stderr
    job = JobPublic.model_validate_json(done.stdout)
    assert job.status is JobStatus.SUCCEEDED and job.output.text
    assert job.model == DEFAULT_MODEL_NAME

    text = genq(stack, "get", job.id, "--text")
    assert text.returncode == 0, text.stderr
    assert text.stdout == job.output.text + "\n"
    piped = genq(stack, "get", job.id)  # not a terminal: JSON
    assert JobPublic.model_validate_json(piped.stdout).output.text == job.output.text


def test_cli_submit_with_a_system_message_and_stream(stack: Stack, client: Client) -> None:
    done = genq(
        stack,
        "submit",
        "What is the capital of France?",
        "--system",
        "You answer with one word.",
        "--stream",  # text, although stdout is a pipe
        "--max-tokens",
        "24",
    )
    assert done.returncode == 0, done.stderr
    job_id = re.search(r"genq: job ([0-9a-f]{32})", done.stderr).group(1)
    job = client.get(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert [m.role for m in job.input.messages] == ["system", "user"]
    assert done.stdout == job.output.text + ("" if job.output.text.endswith("\n") else "\n")


def test_cli_stream_as_json_lines(stack: Stack) -> None:
    done = genq(stack, "submit", "Once upon a time", "--stream", "--json", "--max-tokens", "24")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["type"] == "start" and events[-1]["type"] == "completed"
    text = "".join(e["text"] for e in events if e["type"] == "output")
    assert text == events[-1]["job"]["output"]["text"]


def test_cli_cancel(stack: Stack, client: Client) -> None:
    job = running(client, client.submit(**LONG))
    canceled = genq(stack, "cancel", job.id, "--text")
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout.split()[0] == job.id
    assert client.wait(job.id, timeout=30).status is JobStatus.CANCELED
    # A canceled job exits 1 when shown; canceling it again is a 409.
    assert genq(stack, "get", job.id, "--text").returncode == 1
    again = genq(stack, "cancel", job.id)
    assert again.returncode == 1 and "already canceled" in again.stderr and "409" in again.stderr


def test_cli_bad_request_and_unknown_job(stack: Stack) -> None:
    bad = genq(stack, "submit", "hi", "--max-tokens", "0")
    assert bad.returncode == 1 and bad.stdout == ""
    assert "max_tokens" in bad.stderr and "422 invalid_request" in bad.stderr
    unknown = genq(stack, "get", UNKNOWN_ID)
    assert unknown.returncode == 1 and "404 not_found" in unknown.stderr
