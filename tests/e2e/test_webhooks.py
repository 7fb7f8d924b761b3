"""Webhooks end to end: the real API, worker (vLLM CPU engine) and webhooks process of the session
stack, and real HTTP receivers on loopback that verify every delivery with the Standard Webhooks
reference package. The stack retries after 1 s, three times, with a 1 s timeout (conftest)."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from genq.contract.constants import WEBHOOK_SCHEDULE
from genq.store.embedded import free_port
from tests.e2e.conftest import Stack, wait_for_job, wait_until
from tests.receivers import Receiver, receiver

pytestmark = pytest.mark.engine


def submit(stack: Stack, url: str, events: list[str] | None = None, **fields) -> dict:
    body = {"prompt": "Say hi.", "max_tokens": 8, "webhook": url} | fields
    if events is not None:
        body["webhook_events_filter"] = events
    response = httpx.post(f"{stack.api}/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def deliveries(stack: Stack, job_id: str) -> list[dict]:
    return httpx.get(f"{stack.api}/v1/jobs/{job_id}").json()["webhook_deliveries"]


def wait_for_deliveries(stack: Stack, job_id: str, n: int, timeout_s: float = 20) -> list[dict]:
    return wait_until(
        lambda: (d := deliveries(stack, job_id)) and len(d) >= n and d,
        timeout_s,
        f"{n} webhook attempts of {job_id}",
    )


def test_completed_is_signed_and_is_the_job_object_and_can_be_redelivered(stack: Stack) -> None:
    with receiver(stack.webhook_secret) as rx:
        job = submit(stack, rx.url)
        assert job["webhook"] == rx.url and job["webhook_events_filter"] == ["completed"]
        (got,) = rx.wait_for(1)
        assert got.verified
        assert got.headers["webhook-id"] == f"msg_{job['id']}_completed"
        polled = httpx.get(f"{stack.api}/v1/jobs/{job['id']}").json()
        sent = got.job
        assert sent["status"] == "succeeded" and sent["output"] == polled["output"]
        assert sent["urls"] == polled["urls"] and sent["id"] == job["id"]
        (attempt,) = wait_for_deliveries(stack, job["id"], 1)
        assert (attempt["event"], attempt["attempt"], attempt["status_code"]) == (
            "completed",
            1,
            200,
        )
        assert attempt["webhook_id"] == got.headers["webhook-id"] and attempt["duration_ms"] > 0

        again = httpx.post(f"{stack.api}/v1/jobs/{job['id']}/webhooks/redeliver")
        assert again.status_code == 202, again.text
        first, second = rx.wait_for(2)
        assert second.verified and second.headers["webhook-id"] == first.headers["webhook-id"]
        assert [a["attempt"] for a in wait_for_deliveries(stack, job["id"], 2)] == [1, 2]
        # The redelivered payload carries the first attempt's record.
        assert len(second.job["webhook_deliveries"]) == 1


def test_redeliver_refusals(stack: Stack) -> None:
    plain = httpx.post(f"{stack.api}/v1/jobs", json={"prompt": "x", "max_tokens": 2}).json()
    wait_for_job(stack.api, plain["id"])
    response = httpx.post(f"{stack.api}/v1/jobs/{plain['id']}/webhooks/redeliver")
    assert response.status_code == 409 and "no webhook" in response.json()["error"]["message"]
    response = httpx.post(f"{stack.api}/v1/jobs/nope/webhooks/redeliver")
    assert response.status_code == 404


def test_5xx_twice_then_200_is_three_attempts_of_one_webhook_id(stack: Stack) -> None:
    with receiver(stack.webhook_secret, answers=[500, 502, 200]) as rx:
        job = submit(stack, rx.url)
        got = rx.wait_for(3)
        attempts = wait_for_deliveries(stack, job["id"], 3)
    assert all(g.verified for g in got)
    assert len({g.headers["webhook-id"] for g in got}) == 1
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 500), (2, 502), (3, 200)]
    assert len({a["webhook_id"] for a in attempts}) == 1
    # Backed off about a second between tries (the stack's schedule), not hammered.
    assert all(b.at - a.at >= 0.8 for a, b in zip(got, got[1:]))


def test_a_receiver_down_for_a_while_gets_it_when_it_comes_up(stack: Stack) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    job = submit(stack, url)
    # Nobody listens: the result is still there to poll, and the failed try is on the job.
    assert wait_for_job(stack.api, job["id"])["status"] == "succeeded"
    (failed, *_) = wait_for_deliveries(stack, job["id"], 1)
    assert "status_code" not in failed or failed["status_code"] is None
    assert "Connect" in failed["error"]
    with receiver(stack.webhook_secret, port=port) as rx:
        (got,) = rx.wait_for(1, timeout_s=10)
        assert got.verified
        final = wait_until(
            lambda: (d := deliveries(stack, job["id"])) and d[-1].get("status_code") == 200 and d,
            10,
            "the delivery that succeeded recorded",
        )
    assert final[-1]["attempt"] == len(final) >= 2


def test_a_receiver_that_hangs_times_out_and_is_retried(stack: Stack) -> None:
    with receiver(stack.webhook_secret, hang_s=3) as rx:
        job = submit(stack, rx.url)
        first, second = wait_for_deliveries(stack, job["id"], 2, timeout_s=30)[:2]
        assert rx.got and rx.got[0].verified
    assert "timeout" in first["error"] and first["duration_ms"] < 2500
    assert second["attempt"] == 2 and second["webhook_id"] == first["webhook_id"]


def test_410_is_final(stack: Stack) -> None:
    with receiver(stack.webhook_secret, answers=[410]) as rx:
        job = submit(stack, rx.url)
        rx.wait_for(1)
        time.sleep(2.5)  # past two retry delays
        assert len(rx.got) == 1
    (attempt,) = deliveries(stack, job["id"])
    assert attempt["status_code"] == 410


def test_only_the_requested_events_arrive_and_output_is_throttled(stack: Stack) -> None:
    with (
        receiver(stack.webhook_secret) as every,
        receiver(stack.webhook_secret) as start_only,
    ):
        tokens = {"max_tokens": 120, "min_tokens": 120}
        job = submit(stack, every.url, ["start", "output", "completed"], **tokens)
        other = submit(stack, start_only.url, ["start"], **tokens)
        for j in (job, other):
            wait_for_job(stack.api, j["id"])
        got = every.wait_for(3)
        wait_until(lambda: "completed" in every.events(), 10, "completed arrived")
        time.sleep(1)  # anything late would arrive now
        only = start_only.wait_for(1)
    _check_events(every, job)
    assert [r.headers["genq-event"] for r in only] == ["start"] and only[0].verified
    assert only[0].job["status"] == "processing"
    assert len(got) >= 3


def _check_events(rx: Receiver, job: dict) -> None:
    events = rx.events()
    assert all(r.verified for r in rx.got)
    # The last output event and completed are sent at about the same time, in either order.
    assert events[0] == "start"
    assert events.count("start") == 1 and events.count("completed") == 1
    outputs = [r for r in rx.got if r.headers["genq-event"] == "output"]
    assert outputs, events
    assert len({r.headers["webhook-id"] for r in outputs}) == len(outputs)
    texts = [r.job["output"]["text"] for r in outputs]
    assert all(texts) and rx.got[0].job["status"] == "processing"
    (final,) = [r.job for r in rx.got if r.headers["genq-event"] == "completed"]
    assert final["status"] == "succeeded"
    metrics = final["metrics"]
    # At most one per 500 ms of generation (plus the one its last half-second may add).
    assert len(outputs) <= metrics["generation_ms"] / 500 + 1, (len(outputs), metrics)
    assert final["output"]["text"].startswith(texts[0])


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.1/hook", "private"),
        ("http://172.16.0.1/hook", "private"),
        ("http://192.168.1.1/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://127.0.0.2/hook", "loopback"),  # only 127.0.0.1 is allowed here
        ("http://[::1]/hook", "loopback"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("http://no-such-host.invalid/hook", "resolve"),
    ],
)
def test_ssrf_refused_at_submit(stack: Stack, url: str, why: str) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    scheduled = client.zcard(WEBHOOK_SCHEDULE)
    response = httpx.post(f"{stack.api}/v1/jobs", json={"prompt": "x", "webhook": url})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request" and why in error["message"]
    assert "webhook" in error["message"]
    assert client.zcard(WEBHOOK_SCHEDULE) <= scheduled  # nothing new to send
    client.close()
