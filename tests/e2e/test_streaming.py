"""Getting results the way a caller prefers, on the real stack: ``Prefer: wait``, the SSE
stream of ``GET /v1/jobs/{id}/stream`` (live, late, resumed), and partial output while running."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import Stack, wait_for_job, wait_until

pytestmark = pytest.mark.engine

# Long enough to still be running a second after it starts, on 2 CPU cores.
LONG = {"prompt": "Write a long story about a lighthouse.", "max_tokens": 400, "min_tokens": 400}
SHORT = {"prompt": "Say hello.", "max_tokens": 8}


@dataclass
class Sse:
    event: str
    data: str
    id: str | None


def read_sse(api: str, job_id: str, last_event_id: str | None = None) -> list[Sse]:
    """Every event of the stream, read as a client would, to its end (the server closes it)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[Sse] = []
    fields: dict[str, str] = {}
    with httpx.stream(
        "GET", f"{api}/v1/jobs/{job_id}/stream", headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in fields:
                    events.append(Sse(fields["event"], fields.get("data", ""), fields.get("id")))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return events


def deltas(events: list[Sse]) -> list[dict]:
    return [json.loads(e.data) for e in events if e.event == "output"]


def submit(stack: Stack, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(f"{stack.api}/v1/jobs", json=body, headers=headers, timeout=90)


def test_prefer_wait_answers_200_with_the_finished_job(stack: Stack) -> None:
    response = submit(stack, SHORT, Prefer="wait=60")
    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=60"
    job = response.json()
    assert job["status"] == "succeeded" and job["output"]["text"]


def test_prefer_wait_gives_up_after_n_seconds_with_202(stack: Stack) -> None:
    t0 = time.monotonic()
    response = submit(stack, LONG, Prefer="wait=1")
    waited = time.monotonic() - t0
    assert response.status_code == 202, response.text
    assert response.json()["status"] in ("queued", "processing")
    assert 1.0 <= waited < 5.0
    job_id = response.json()["id"]
    # The same on GET: 200 whether finished or not.
    t0 = time.monotonic()
    got = httpx.get(f"{stack.api}/v1/jobs/{job_id}", headers={"Prefer": "wait=1"})
    assert got.status_code == 200 and got.json()["status"] != "succeeded"
    assert 1.0 <= time.monotonic() - t0 < 5.0
    httpx.post(f"{stack.api}/v1/jobs/{job_id}/cancel", timeout=30)


@pytest.mark.parametrize("prefer", ["wait=0", "wait=61", "wait=soon"])
def test_a_bad_prefer_wait_is_a_422_and_enqueues_nothing(stack: Stack, prefer: str) -> None:
    before = httpx.get(f"{stack.api}/v1/queue").json()["depth"]
    response = submit(stack, SHORT, Prefer=prefer)
    assert response.status_code == 422
    assert "Prefer: wait" in response.json()["error"]["message"]
    assert httpx.get(f"{stack.api}/v1/queue").json()["depth"] <= before


def test_a_live_stream_has_start_every_delta_in_order_then_completed(stack: Stack) -> None:
    job_id = submit(stack, {**SHORT, "max_tokens": 48, "min_tokens": 48}).json()["id"]
    events = read_sse(stack.api, job_id)
    assert events[0].event == "start" and events[-1].event == "completed"
    assert {e.event for e in events[1:-1]} == {"output"}
    out = deltas(events)
    assert [d["index"] for d in out] == list(range(len(out)))
    final = json.loads(events[-1].data)
    assert final["status"] == "succeeded" and final["id"] == job_id
    assert "".join(d["text"] for d in out) == final["output"]["text"]
    assert out[-1]["output_tokens"] == final["metrics"]["output_tokens"] == 48
    assert all(e.id for e in events)


def test_a_late_client_gets_it_all_and_last_event_id_resumes_without_gaps(stack: Stack) -> None:
    job_id = submit(stack, {**SHORT, "max_tokens": 48, "min_tokens": 48}).json()["id"]
    live = read_sse(stack.api, job_id)
    job = wait_for_job(stack.api, job_id)
    late = read_sse(stack.api, job_id)
    assert [(e.id, e.event) for e in late] == [(e.id, e.event) for e in live]
    assert deltas(late) == deltas(live)
    # Resume after the second delta: the rest, from index 2 on.
    cut = [e for e in live if e.event == "output"][1]
    rest = read_sse(stack.api, job_id, last_event_id=cut.id)
    rest_out = deltas(rest)
    assert rest_out[0]["index"] == 2 and rest[-1].event == "completed"
    seen = "".join(d["text"] for d in deltas(live)[:2])
    assert seen + "".join(d["text"] for d in rest_out) == job["output"]["text"]


def test_while_running_get_shows_the_output_so_far(stack: Stack) -> None:
    job_id = submit(stack, LONG).json()["id"]

    def partial() -> dict | None:
        job = httpx.get(f"{stack.api}/v1/jobs/{job_id}").json()
        tokens = job["metrics"]["output_tokens"]
        return job if job["status"] == "processing" and tokens and tokens >= 8 else None

    during = wait_until(partial, 120, "partial output")
    final = wait_for_job(stack.api, job_id, timeout_s=300)
    assert final["status"] == "succeeded"
    assert final["output"]["text"].startswith(during["output"]["text"])
    assert during["metrics"]["output_tokens"] < final["metrics"]["output_tokens"] == 400


def test_stream_errors_are_clear(stack: Stack) -> None:
    missing = httpx.get(f"{stack.api}/v1/jobs/nope/stream")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    job_id = submit(stack, SHORT).json()["id"]
    bad = httpx.get(f"{stack.api}/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": "not-an-id"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["error"]["message"]
