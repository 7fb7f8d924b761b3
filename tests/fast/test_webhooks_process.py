"""`genq webhooks` and `genq api` as real processes on a real Redis, no worker and no engine: a
queued job canceled through the API sends its signed ``completed`` webhook (the API's cancel is
one of the places a job ends), and redeliver sends it again under the same webhook-id."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import redis

from genq.contract.webhooks import new_secret
from genq.store.embedded import EmbeddedRedis, free_port
from tests.e2e.conftest import start_role, stop_role, wait_until
from tests.receivers import receiver


def test_a_job_canceled_in_the_queue_sends_completed(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    redis.Redis.from_url(redis_server.url).flushdb()
    secret, port = new_secret(), free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "GENQ_API_PORT": str(port),
        "GENQ_QUEUE": "genq.nobody",  # no worker: the job stays queued
        "GENQ_WEBHOOK_SECRET": secret,
        "GENQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "GENQ_WEBHOOK_POLL_S": "0.1",
    }
    api_url = f"http://127.0.0.1:{port}"
    api = start_role("api", env, tmp_path / "api.log")
    webhooks = start_role("webhooks", env, tmp_path / "webhooks.log")
    try:
        wait_until(lambda: httpx.get(f"{api_url}/healthz").status_code == 200, 30, "API", api)
        with receiver(secret) as rx:
            body = {"prompt": "never runs", "webhook": rx.url}
            job = httpx.post(f"{api_url}/v1/jobs", json=body).json()
            assert job["status"] == "queued"
            again = httpx.post(f"{api_url}/v1/jobs/{job['id']}/webhooks/redeliver")
            assert again.status_code == 409 and "not finished" in again.text
            assert httpx.post(f"{api_url}/v1/jobs/{job['id']}/cancel").status_code == 200
            (got,) = rx.wait_for(1, timeout_s=30)
            assert got.verified and got.job["status"] == "canceled"
            assert got.job["urls"]["get"] == f"{api_url}/v1/jobs/{job['id']}"
            assert got.headers["webhook-id"] == f"msg_{job['id']}_completed"
            redo = httpx.post(f"{api_url}/v1/jobs/{job['id']}/webhooks/redeliver")
            assert redo.status_code == 202, redo.text
            _, second = rx.wait_for(2, timeout_s=30)
            assert second.verified and second.headers["webhook-id"] == got.headers["webhook-id"]

            def recorded() -> list[dict] | None:
                d = httpx.get(f"{api_url}/v1/jobs/{job['id']}").json()["webhook_deliveries"]
                return d if len(d) == 2 else None

            attempts = wait_until(recorded, 10, "both attempts recorded")
        assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 200), (2, 200)]
    finally:
        stop_role(webhooks)
        stop_role(api)
        log = (tmp_path / "webhooks.log").read_text()
        assert "Traceback" not in log, log[-3000:]
