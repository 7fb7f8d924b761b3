"""Metrics and queue status against the running stack: the worker's /metrics (genq's job and
engine metrics, vLLM's own) and the API's /metrics move by what the jobs did; GET /v1/queue
counts jobs kept waiting on a parked queue."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ParkedApi, Stack, wait_for_job, wait_until
from worker.model_files import DEFAULT_MODEL_NAME

pytestmark = pytest.mark.engine

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[Samples, str]:
    text = httpx.get(f"{url}/metrics").text
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return samples, text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def run_jobs(stack: Stack, n: int, max_tokens: int) -> list[dict]:
    def one(i: int) -> dict:
        body = {"prompt": f"Count to {i + 3}:", "max_tokens": max_tokens, "min_tokens": max_tokens}
        response = httpx.post(f"{stack.api}/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        return wait_for_job(stack.api, response.json()["id"])

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def settle(stack: Stack, last_job: dict) -> dict:
    """Until the worker runs nothing: a heartbeat after ``last_job`` ended says so (a job's
    metrics are recorded before it leaves the running set). Returns that heartbeat's info."""
    last = datetime.fromisoformat(last_job["completed_at"]).timestamp()
    return wait_until(
        lambda: (i := stack.worker_info())["heartbeat_at"] > last and i["jobs_running"] == 0 and i,
        30,
        "the worker idle",
    )


def test_worker_and_api_metrics_count_what_the_jobs_did(stack: Stack) -> None:
    settle(stack, wait_for_job(stack.api, stack.early_job_id))
    worker_before, _ = scrape(stack.worker_http)
    api_before, _ = scrape(stack.api)
    # The engine gauges, watched while four jobs share the batch.
    peak = {"running": 0.0}

    def watch() -> None:
        while True:
            samples, _ = scrape(stack.worker_http)
            running = value(samples, "genq_engine_running_requests")
            peak["running"] = max(peak["running"], running)
            if (
                value(samples, "genq_jobs_total", status="succeeded")
                >= value(worker_before, "genq_jobs_total", status="succeeded") + 4
            ):
                return

    with ThreadPoolExecutor(1) as watcher:
        watching = watcher.submit(watch)
        jobs = run_jobs(stack, 4, max_tokens=96)
        rejected = httpx.post(f"{stack.api}/v1/jobs", json={"prompt": "x", "max_tokens": 0})
        assert rejected.status_code == 422
        watching.result(timeout=30)
    assert [j["status"] for j in jobs] == ["succeeded"] * 4
    tokens = sum(j["metrics"]["output_tokens"] for j in jobs)
    assert tokens == 4 * 96

    worker, worker_text = scrape(stack.worker_http)

    def moved(name: str, **labels: str) -> float:
        return value(worker, name, **labels) - value(worker_before, name, **labels)

    assert moved("genq_jobs_total", status="succeeded") == 4
    assert moved("genq_jobs_total", status="failed") == 0
    assert moved("genq_output_tokens_total") == tokens
    for histogram in ("queue_wait", "time_to_first_token", "job_duration"):
        assert moved(f"genq_{histogram}_seconds_count") == 4
    ttft_s = sum(j["metrics"]["ttft_ms"] for j in jobs) / 1000
    assert moved("genq_time_to_first_token_seconds_sum") == pytest.approx(ttft_s, abs=0.01)
    # From vLLM's scheduler, through the stat logger: the gauge saw the jobs running (how many at
    # the instants it was scraped depends on the 2 shared cores), and the batch is empty once
    # they are done; the KV cache share is a ratio.
    assert peak["running"] >= 1
    assert value(worker, "genq_engine_running_requests") == 0
    assert value(worker, "genq_engine_waiting_requests") == 0
    assert 0 <= value(worker, "genq_kv_cache_usage_ratio") <= 1
    assert value(worker, "genq_worker_ready") == 1
    assert value(worker, "genq_worker_startup_seconds", phase="total") > 0
    # vLLM's own metrics are served beside genq's, and agree on the tokens.
    assert "vllm:num_requests_running" in worker_text
    generation = [name for name, _ in worker if name == "vllm:generation_tokens_total"]
    assert generation, "vLLM's generation token counter is missing"
    (labels,) = {labels for name, labels in worker if name == "vllm:generation_tokens_total"}
    assert moved("vllm:generation_tokens_total", **dict(labels)) == tokens

    api, api_text = scrape(stack.api)

    def api_moved(name: str, **labels: str) -> float:
        return value(api, name, **labels) - value(api_before, name, **labels)

    assert api_moved("genq_api_jobs_submitted_total") == 4
    assert api_moved("genq_api_jobs_rejected_total", reason="invalid_request") == 1
    posts = {"method": "POST", "route": "/v1/jobs"}
    assert api_moved("genq_api_request_duration_seconds_count", **posts, status="2xx") == 4
    assert api_moved("genq_api_request_duration_seconds_count", **posts, status="4xx") == 1
    polls = value(api, "genq_api_request_duration_seconds_count", method="GET",
                  route="/v1/jobs/{job_id}", status="2xx")  # fmt: skip
    assert polls >= 4
    assert value(api, "genq_api_redis_up") == 1
    # No job id anywhere in a label (nor a raw path).
    for job in jobs:
        assert job["id"] not in worker_text and job["id"] not in api_text

    # The heartbeat carries the worker's rates of the last minute (a beat after the last job).
    info = settle(stack, max(jobs, key=lambda j: j["completed_at"]))
    assert info["jobs_per_s"] > 0
    assert info["tokens_per_s"] >= tokens / 60 - 0.01


def test_queue_status_counts_jobs_kept_waiting(stack: Stack, parked_api: ParkedApi) -> None:
    (ran,) = run_jobs(stack, 1, max_tokens=4)  # a rate to estimate the wait with
    assert settle(stack, ran)["jobs_per_s"] > 0
    parked = []
    for i in range(3):
        response = httpx.post(f"{parked_api.url}/v1/jobs", json={"prompt": f"wait {i}"})
        assert response.status_code == 202
        parked.append(response.json()["id"])

    status = httpx.get(f"{stack.api}/v1/queue").json()
    assert set(status) == {
        "depth",
        "running",
        "warm_workers",
        "jobs_per_s",
        "tokens_per_s",
        "estimated_wait_s",
        "models",
    }
    assert status["depth"] == 3
    # All three are the default model's: its own line says the same.
    mine = status["models"][DEFAULT_MODEL_NAME]
    assert (mine["depth"], mine["warm_workers"]) == (3, 1)
    assert mine["estimated_wait_s"] == status["estimated_wait_s"]
    assert status["running"] == 0
    assert status["warm_workers"] == 1
    assert status["jobs_per_s"] > 0 and status["tokens_per_s"] > 0
    assert status["estimated_wait_s"] == pytest.approx(3 / status["jobs_per_s"], abs=0.1)
    # The parked API's /metrics: its own queue's list holds the three messages.
    samples, _ = scrape(parked_api.url)
    assert value(samples, "genq_queue_length", queue=parked_api.queue) == 3
    assert value(samples, "genq_jobs_waiting") == 3

    assert parked_api.release() == 3
    for job_id in parked:
        assert wait_for_job(stack.api, job_id)["status"] == "succeeded"
    assert httpx.get(f"{stack.api}/v1/queue").json()["depth"] == 0
