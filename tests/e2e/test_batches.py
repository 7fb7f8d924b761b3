"""Batches end to end: the session stack's real API, worker (vLLM CPU engine) and webhooks process,
a real HTTP receiver on loopback verifying the batch's webhook with the Standard Webhooks reference
package, and the parked API (GENQ_MAX_QUEUED=5, a queue no worker consumes) for what must stay
queued."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import httpx
import pytest
import redis

from genq.contract.constants import QUEUED_COUNT
from tests.e2e.conftest import ParkedApi, Stack, wait_for_job, wait_until
from tests.receivers import receiver

pytestmark = pytest.mark.engine

ONE_WORD = {"role": "system", "content": "You answer with one word."}
PROMPTS = ["What is the capital of France?", "Name a colour.", "Count to three."]


def wait_for_batch(url: str, timeout_s: float = 120) -> dict:
    def completed() -> dict | None:
        batch = httpx.get(url).json()
        return batch if batch["status"] == "completed" else None

    return wait_until(completed, timeout_s, f"batch {url} completed")


def utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def redis_state(stack: Stack, queue: str) -> tuple[int, int, int, int]:
    """(messages on ``queue``, jobs waiting, job records, batch records)."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        jobs = sum(1 for k in client.scan_iter("genq:job:*", 1000) if k.count(":") == 2)
        batches = sum(1 for k in client.scan_iter("genq:batch:*", 1000) if k.count(":") == 2)
        return client.llen(queue), int(client.get(QUEUED_COUNT) or 0), jobs, batches
    finally:
        client.close()


def test_a_batch_runs_to_completed_and_its_webhook_arrives_once_signed(stack: Stack) -> None:
    body = {
        "max_tokens": 16,
        "metadata": {"suite": "e2e"},
        "items": [{"messages": [{"role": "user", "content": p}]} for p in PROMPTS],
    }
    body["items"][0]["messages"].insert(0, ONE_WORD)  # as tests/e2e/test_slice.py asks it
    body["items"][2]["max_tokens"] = 4  # its own, over the shared 16
    with receiver(stack.webhook_secret) as rx:
        response = httpx.post(f"{stack.api}/v1/batches", json=body | {"webhook": rx.url})
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["status"] == "processing" and accepted["total"] == 3
        done = wait_for_batch(accepted["urls"]["get"])
        (got,) = rx.wait_for(1)
        time.sleep(1.5)  # a second delivery would arrive now (the stack polls every 0.1 s)
        assert len(rx.got) == 1

    jobs = [httpx.get(j["url"]).json() for j in done["jobs"]]
    assert [j["id"] for j in jobs] == [j["id"] for j in accepted["jobs"]]
    for job in jobs:
        assert job["status"] == "succeeded" and job["batch_id"] == accepted["id"]
        assert job["output"]["text"].strip() and job["metrics"]["output_tokens"] > 0
        assert job["worker"] == stack.worker_name
    assert [j["input"]["sampling"]["max_tokens"] for j in jobs] == [16, 16, 4]
    assert all(j["metrics"]["output_tokens"] <= j["input"]["sampling"]["max_tokens"] for j in jobs)
    # Real generations: the capital question, greedy, gets Paris (as in test_slice.py).
    assert "Paris" in jobs[0]["output"]["text"]
    assert done["counts"] == {
        "queued": 0,
        "processing": 0,
        "succeeded": 3,
        "failed": 0,
        "canceled": 0,
    }
    assert [j["status"] for j in done["jobs"]] == ["succeeded"] * 3
    # completed_at: set in the step that ended the last job, never moved after.
    last_end = max(utc(j["completed_at"]) for j in jobs)
    completed_at = utc(done["completed_at"])
    assert timedelta(0) <= completed_at - last_end < timedelta(seconds=1)
    assert httpx.get(accepted["urls"]["get"]).json()["completed_at"] == done["completed_at"]

    assert got.verified
    assert got.headers["webhook-id"] == f"msg_{accepted['id']}_batch_completed"
    assert got.headers["genq-object"] == "batch"
    sent = got.job
    assert sent["object"] == "batch" and sent["status"] == "completed"
    assert sent["counts"] == done["counts"] and sent["completed_at"] == done["completed_at"]
    assert sent["metadata"] == {"suite": "e2e"} and sent["urls"] == accepted["urls"]
    (attempt,) = wait_until(
        lambda: httpx.get(accepted["urls"]["get"]).json()["webhook_deliveries"],
        10,
        "the batch's delivery recorded",
    )
    assert attempt["status_code"] == 200 and attempt["attempt"] == 1


def test_a_too_large_batch_is_422_with_nothing_enqueued(stack: Stack) -> None:
    before = redis_state(stack, "genq.generate")
    items = [{"prompt": f"{i}", "max_tokens": 1} for i in range(1001)]  # GENQ_MAX_BATCH_ITEMS
    response = httpx.post(f"{stack.api}/v1/batches", json={"items": items})
    assert response.status_code == 422
    assert "at most 1000" in response.json()["error"]["message"]
    bad = httpx.post(
        f"{stack.api}/v1/batches", json={"items": [{"prompt": "ok"}, {"prompt": "x", "top_p": 0}]}
    )
    assert bad.status_code == 422 and bad.json()["error"]["message"].startswith("items.1.top_p")
    after = redis_state(stack, "genq.generate")
    assert after[2:] == before[2:]  # no job, no batch was written


def test_a_batch_that_would_overflow_the_queue_is_429_with_nothing_enqueued(
    stack: Stack, parked_api: ParkedApi
) -> None:
    waiting = redis_state(stack, parked_api.queue)[1]
    parked = []
    for i in range(3 - waiting):  # three waiting of the parked API's five
        response = httpx.post(
            f"{parked_api.url}/v1/jobs", json={"prompt": f"p{i}", "max_tokens": 2}
        )
        assert response.status_code == 202
        parked.append(response.json()["id"])
    before = redis_state(stack, parked_api.queue)
    assert before[1] == 3

    items = [{"prompt": f"b{i}", "max_tokens": 2} for i in range(3)]
    response = httpx.post(f"{parked_api.url}/v1/batches", json={"items": items})
    assert response.status_code == 429, response.text
    assert response.json()["error"]["type"] == "overloaded"
    assert int(response.headers["Retry-After"]) >= 1
    assert redis_state(stack, parked_api.queue) == before

    # Two do fit, and are enqueued with the rest.
    fits = httpx.post(f"{parked_api.url}/v1/batches", json={"items": items[:2]})
    assert fits.status_code == 202, fits.text
    assert redis_state(stack, parked_api.queue)[:2] == (len(parked) + 2, 5)
    assert parked_api.release() == len(parked) + 2
    batch = wait_for_batch(fits.json()["urls"]["get"])
    assert batch["counts"]["succeeded"] == 2
    for job_id in parked:
        wait_for_job(stack.api, job_id)


def test_cancel_a_batch_queued_and_running(stack: Stack, parked_api: ParkedApi) -> None:
    # Queued (parked, never run): canceled at once.
    queued = httpx.post(
        f"{parked_api.url}/v1/batches", json={"items": [{"prompt": "never"}, {"prompt": "no"}]}
    ).json()
    response = httpx.post(f"{stack.api}/v1/batches/{queued['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["counts"]["canceled"] == 2
    assert parked_api.release() == 2  # their messages run and are skipped
    time.sleep(1)
    assert all(
        httpx.get(j["url"]).json()["attempts"] == 0 for j in response.json()["jobs"]
    )  # never started

    # Running on the engine: aborted there, each with its partial output.
    long = {"prompt": "Write a very long story about the sea.", "max_tokens": 1500}
    response = httpx.post(
        f"{stack.api}/v1/batches", json={"min_tokens": 1500, "items": [long, long]}
    )
    assert response.status_code == 202, response.text
    running = response.json()
    wait_until(
        lambda: httpx.get(running["urls"]["get"]).json()["counts"]["processing"] == 2,
        60,
        "both jobs running",
    )
    time.sleep(0.5)
    response = httpx.post(f"{stack.api}/v1/batches/{running['id']}/cancel")
    assert response.status_code == 200, response.text
    batch = response.json()
    assert batch["status"] == "completed" and batch["counts"]["canceled"] == 2
    for ref in batch["jobs"]:
        job = httpx.get(ref["url"]).json()
        assert job["status"] == "canceled" and job["error"]["type"] == "canceled"
        assert job["output"]["finish_reason"] == "abort"
        assert job["metrics"]["output_tokens"] < 1500
    again = httpx.post(f"{stack.api}/v1/batches/{running['id']}/cancel")
    assert again.status_code == 409
    assert httpx.get(f"{stack.api}/v1/batches/nope").status_code == 404
