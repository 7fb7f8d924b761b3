"""The API's /metrics (api.metrics) against a real Redis, no worker: jobs submitted and rejected
by reason, request latency by route template, the queue gauges read at scrape time, and the
counters summed over every process of a ``genq api`` that runs two."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from genq.contract.constants import QUEUED_COUNT, WEBHOOK_QUEUE, model_queued_key
from genq.contract.settings import ApiSettings
from genq.store.embedded import EmbeddedRedis, free_port
from tests.conftest import MODEL_QUEUE


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of one series of a Prometheus text exposition (0 if absent)."""
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def flushed(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    return redis_server.url


def test_submissions_rejections_latency_and_queue_depth(flushed: str) -> None:
    settings = ApiSettings(redis_url=flushed, max_queued=2, max_body_bytes=1024)
    with TestClient(create_app(settings)) as client:
        before = client.get("/metrics").text
        job = client.post("/v1/jobs", json={"prompt": "hi", "max_tokens": 4})
        assert job.status_code == 202
        client.post("/v1/jobs", json={"prompt": "hi again", "max_tokens": 4})
        assert client.post("/v1/jobs", json={"prompt": "full"}).status_code == 429
        assert client.post("/v1/jobs", json={"prompt": 3}).status_code == 422
        assert client.post("/v1/jobs", content=b"x" * 2048).status_code == 413
        assert client.post("/generate", json={}).status_code == 422
        assert client.get(f"/v1/jobs/{job.json()['id']}").status_code == 200
        assert client.get("/no/such/path").status_code == 404
        after = client.get("/metrics")

    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def delta(name: str, labels: str = "") -> float:
        return sample(text, name, labels) - sample(before, name, labels)

    assert delta("genq_api_jobs_submitted_total") == 2
    assert delta("genq_api_jobs_rejected_total", 'reason="overloaded"') == 1
    assert delta("genq_api_jobs_rejected_total", 'reason="invalid_request"') == 2
    assert delta("genq_api_jobs_rejected_total", 'reason="request_entity_too_large"') == 1
    route = 'method="POST",route="/v1/jobs",status="2xx"'
    assert delta("genq_api_request_duration_seconds_count", route) == 2
    route = 'method="GET",route="/v1/jobs/{job_id}",status="2xx"'
    assert delta("genq_api_request_duration_seconds_count", route) == 1
    route = 'method="GET",route="unmatched",status="4xx"'
    assert delta("genq_api_request_duration_seconds_count", route) == 1
    assert "/no/such/path" not in text
    # Read from Redis for this scrape: two messages on the jobs' queue, none on the webhooks'.
    assert sample(text, "genq_queue_length", f'queue="{MODEL_QUEUE}"') == 2
    assert sample(text, "genq_queue_length", f'queue="{WEBHOOK_QUEUE}"') == 0
    assert sample(text, "genq_jobs_waiting") == 2
    assert sample(text, "genq_api_redis_up") == 1
    assert "_created" not in text


def test_queue_status_without_workers(flushed: str) -> None:
    client = redis.Redis.from_url(flushed)
    client.set(QUEUED_COUNT, 3)
    client.set(model_queued_key("b"), 2)
    settings = ApiSettings(redis_url=flushed, models=["a", "b"])
    with TestClient(create_app(settings)) as api:
        status = api.get("/v1/queue").json()
    idle = {
        "running": 0,
        "warm_workers": 0,
        "jobs_per_s": 0.0,
        "tokens_per_s": 0.0,
        "estimated_wait_s": None,  # no rate to go by
    }
    assert status == {
        "depth": 3,
        **idle,
        "models": {"a": {"depth": 0, **idle}, "b": {"depth": 2, **idle}},
    }


def test_two_api_processes_report_the_sum_of_their_counters(flushed: str, tmp_path: Path) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = {
        **os.environ,
        "REDIS_URL": flushed,
        "GENQ_API_PORT": str(port),
        "GENQ_API_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),  # set here to see whose files are there
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "genq.cli.main", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)

        def reject(_: int) -> int:  # a connection of its own each: both processes take some
            return httpx.post(f"{url}/v1/jobs", json={"prompt": 3}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(reject, range(64))) == {422}
        pids = {p.stem.split("_")[-1] for p in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2, f"one process served every request: {pids}"
        for _ in range(6):  # each scrape reaches one process or the other: every one sums both
            text = httpx.get(f"{url}/metrics").text
            assert sample(text, "genq_api_jobs_rejected_total", 'reason="invalid_request"') == 64
    finally:
        os.killpg(api.pid, 15)
        api.wait(30)
