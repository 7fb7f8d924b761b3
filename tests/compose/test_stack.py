"""What a user of `docker compose --profile cpu up` meets, checked from outside the containers.

The order is the file's: first the stack as it came up (the README's curl, a job polled, a signed
webhook, Flower, Prometheus), then the faults an operator meets (Redis restarted under waiting
jobs, a worker that crashes mid-job).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.compose.conftest import (
    WORKER,
    HookReceiver,
    Stack,
    compose,
    container_of,
    docker,
    healthy,
    wait_until,
)

SEED_PROMPT = "What is the capital of France?"


def test_the_readme_curl_gets_paris(stack: Stack) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("no curl on this machine")
    done = subprocess.run(
        [
            curl, "-s", "-X", "POST", f"{stack.api}/generate",
            "-H", "Content-Type: application/json",
            "-d", json.dumps({"prompt": SEED_PROMPT}),
        ],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    answer = json.loads(done.stdout)
    assert "Paris" in answer["generated_text"], answer
    assert answer["latency_ms"] > 0


def test_a_job_is_accepted_and_polled_to_its_result(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.api}/v1/jobs", json={"prompt": "Count to five.", "max_tokens": 16}, timeout=10
    )
    assert response.status_code == 202, response.text
    job_url = response.headers["location"]
    assert job_url.endswith(f"/v1/jobs/{response.json()['id']}")

    def finished() -> dict | None:
        job = httpx.get(job_url, timeout=10).json()
        return job if job["status"] == "succeeded" else None

    job = wait_until(finished, 120, "the job polled to succeeded")
    assert job["output"]["text"]
    metrics = job["metrics"]
    assert metrics["output_tokens"] >= 1
    for latency in ("queue_ms", "ttft_ms", "generation_ms", "total_ms", "tokens_per_s"):
        assert metrics[latency] is not None and metrics[latency] >= 0, (latency, metrics)


def test_a_signed_webhook_reaches_a_receiver(stack: Stack, hook_receiver: HookReceiver) -> None:
    job = stack.submit(prompt="Say hello.", max_tokens=8, webhook=hook_receiver.url)

    def delivered() -> list[dict] | None:
        got = [
            r for r in hook_receiver.received() if job["id"] in base64.b64decode(r["body"]).decode()
        ]
        return got or None

    (request,) = wait_until(delivered, 120, "the webhook delivered")
    body = base64.b64decode(request["body"])
    # The Standard Webhooks reference implementation, with the secret the stack was given.
    Webhook(stack.webhook_secret).verify(body, request["headers"])
    sent = json.loads(body)
    assert sent["id"] == job["id"] and sent["status"] == "succeeded"


def test_flower_lists_the_worker_behind_its_basic_auth(stack: Stack) -> None:
    assert httpx.get(f"{stack.flower}/api/workers", timeout=10).status_code == 401
    genq_workers = {w["name"] for w in httpx.get(f"{stack.api}/v1/workers").json()["workers"]}
    assert genq_workers, "no warm worker registered with the API"

    def listed() -> dict | None:
        # refresh: Flower asks the workers now (a broadcast), instead of answering from its cache.
        response = httpx.get(
            f"{stack.flower}/api/workers", params={"refresh": 1}, auth=stack.flower_auth, timeout=30
        )
        assert response.status_code == 200, response.text
        workers = response.json()
        return workers if genq_workers <= set(workers) else None

    wait_until(listed, 60, f"Flower lists {genq_workers}")


def test_prometheus_scrapes_the_api_and_the_worker(stack: Stack) -> None:
    def scraped() -> dict | None:
        targets = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=10).json()
        health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
        return health if health.get("genq-api") == health.get("genq-worker") == "up" else None

    wait_until(scraped, 90, "Prometheus scraping genq-api and genq-worker")

    def warm_workers() -> float | None:
        query = {"query": 'sum(genq_worker_ready{job="genq-worker"})'}
        result = httpx.get(f"{stack.prometheus}/api/v1/query", params=query, timeout=10).json()
        series = result["data"]["result"]
        return float(series[0]["value"][1]) if series and float(series[0]["value"][1]) else None

    assert wait_until(warm_workers, 60, "genq_worker_ready scraped") == 1


# Each fault waits for a worker to get warm again (minutes on 2 cores) besides its jobs.
@pytest.mark.timeout(900)
def test_redis_restarted_under_waiting_jobs_loses_none(stack: Stack) -> None:
    """With the worker stopped, jobs wait in Redis; Redis restarts (its append-only file on the
    volume); then the worker starts again and every job completes."""
    compose("stop", WORKER, timeout_s=180)
    ids = [stack.submit(prompt=f"Waiting job {i}.", max_tokens=8)["id"] for i in range(5)]
    assert {stack.job(i)["status"] for i in ids} == {"queued"}
    time.sleep(1.5)  # appendfsync everysec: what Redis took over a second ago is on the volume
    compose("restart", "redis")
    wait_until(lambda: healthy("redis"), 60, "redis healthy again")
    assert {stack.job(i)["status"] for i in ids} == {"queued"}, "the jobs survived the restart"

    compose("start", WORKER)
    wait_until(lambda: healthy(WORKER), 600, "the worker warm again")
    for job_id in ids:
        assert stack.wait_for_job(job_id)["status"] == "succeeded"


@pytest.mark.timeout(900)
def test_a_worker_that_crashes_mid_job_is_restarted_and_the_job_succeeds_once(
    stack: Stack, hook_receiver: HookReceiver
) -> None:
    """kill -9 of the worker container's main process, as an out-of-memory kill would end it:
    the restart policy brings the container back, it gets warm again, finds the job whose lease
    lapsed, and runs it to the end; one record, one `succeeded` webhook.

    (`docker compose kill` is a deliberate stop to Docker: it turns the restart policy off until
    the next start, so it cannot stand for a crash.)"""
    container = container_of(WORKER)
    restarts = int(docker("inspect", "-f", "{{.RestartCount}}", container))
    tokens = 512
    job = stack.submit(
        prompt="Tell a long tale.", max_tokens=tokens, min_tokens=tokens, webhook=hook_receiver.url
    )

    def running() -> bool:
        now = stack.job(job["id"])
        return now["status"] == "processing" and bool(now["output"] and now["output"]["text"])

    wait_until(running, 60, "the long job generating")
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", container))
    os.kill(pid, signal.SIGKILL)

    wait_until(
        lambda: int(docker("inspect", "-f", "{{.RestartCount}}", container)) > restarts,
        60,
        "the restart policy restarting the worker",
    )
    wait_until(lambda: healthy(WORKER), 600, "the restarted worker warm")
    done = stack.wait_for_job(job["id"], timeout_s=300)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["metrics"]["output_tokens"] == tokens

    def completions() -> list[dict] | None:
        got = [
            json.loads(base64.b64decode(r["body"]))
            for r in hook_receiver.received()
            if job["id"] in base64.b64decode(r["body"]).decode()
        ]
        return got or None

    (sent,) = wait_until(completions, 60, "the job's webhook")
    assert sent["status"] == "succeeded"
