"""Cancel, idempotent submit, overload and body limits, each done for real against the stack."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from genq.contract.constants import QUEUED_COUNT, model_queue
from tests.e2e.conftest import (
    ParkedApi,
    Stack,
    another_api,
    start_role,
    stop_role,
    wait_for_job,
    wait_until,
)
from worker.model_files import DEFAULT_MODEL_NAME

pytestmark = pytest.mark.engine


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _worker(stack: Stack) -> dict:
    return stack.worker_info()


def _start_long_job(stack: Stack, prompt: str, tokens: int) -> str:
    """Submit a job of exactly ``tokens`` output tokens and wait until a worker runs it."""
    body = {"prompt": prompt, "max_tokens": tokens, "min_tokens": tokens}
    job_id = httpx.post(f"{stack.api}/v1/jobs", json=body).json()["id"]
    wait_until(
        lambda: httpx.get(f"{stack.api}/v1/jobs/{job_id}").json()["status"] == "processing",
        30,
        "job started",
    )
    return job_id


def _frozen_mid_job(stack: Stack, prompt: str, tokens: int, tries: int = 3) -> str:
    """Start a job of ``tokens`` tokens, let it run a second, then stop (SIGSTOP) the worker's
    whole process group, engine included: a job still ``processing`` then cannot end before the
    test's next step, however long the machine stalls the test (in one CI run a 400-token job
    ended between its check and its kill). A job that ended before the freeze is retried with a
    new one. The caller kills what it means to and continues (SIGCONT) what is left."""
    for _ in range(tries):
        job_id = _start_long_job(stack, prompt, tokens)
        time.sleep(1)
        os.killpg(stack.worker.pid, signal.SIGSTOP)
        if httpx.get(f"{stack.api}/v1/jobs/{job_id}").json()["status"] == "processing":
            return job_id
        os.killpg(stack.worker.pid, signal.SIGCONT)
    raise AssertionError(f"no {tokens}-token job was still running a second after it started")


def test_a_queued_job_canceled_never_runs(stack: Stack, parked_api: ParkedApi) -> None:
    job = httpx.post(f"{parked_api.url}/v1/jobs", json={"prompt": "never", "max_tokens": 4}).json()
    assert job["status"] == "queued"
    response = httpx.post(f"{stack.api}/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    assert response.json()["error"]["type"] == "canceled"
    # Its message still reaches a worker, which must skip it.
    assert parked_api.release() == 1
    time.sleep(2)
    after = httpx.get(f"{stack.api}/v1/jobs/{job['id']}").json()
    assert after["status"] == "canceled"
    assert after["started_at"] is None and after["worker"] is None and after["output"] is None


def test_a_running_job_is_aborted_inside_the_engine(stack: Stack) -> None:
    job_id = _start_long_job(stack, "Count to ten thousand.", 4000)
    wait_until(lambda: _worker(stack)["engine_requests"] >= 1, 10, "the engine holds the request")
    time.sleep(0.5)

    # 200: the job was terminal within the API's GENQ_CANCEL_WAIT_S (10 s) of the request; a
    # cancel that had not reached the engine would answer 202 (it runs for minutes). No bound
    # on the client's own clock: a CI machine that stalls the test process a minute would trip
    # it (seen once) without anything of genq being slow.
    response = httpx.post(f"{stack.api}/v1/jobs/{job_id}/cancel", timeout=30)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "canceled" and job["error"]["type"] == "canceled"
    assert job["output"]["finish_reason"] == "abort"
    assert 0 < job["metrics"]["output_tokens"] < 4000
    assert job["output"]["text"]
    # The engine stopped spending on it.
    wait_until(
        lambda: _worker(stack)["engine_requests"] == 0 and _worker(stack)["jobs_running"] == 0,
        10,
        "the engine let go of the request",
    )


def test_a_finished_job_cannot_be_canceled_and_an_unknown_one_is_404(stack: Stack) -> None:
    job_id = httpx.post(f"{stack.api}/v1/jobs", json={"prompt": "Hi", "max_tokens": 4}).json()["id"]
    assert wait_for_job(stack.api, job_id)["status"] == "succeeded"
    response = httpx.post(f"{stack.api}/v1/jobs/{job_id}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "conflict"
    assert httpx.post(f"{stack.api}/v1/jobs/{'0' * 32}/cancel").status_code == 404


def test_the_same_idempotency_key_and_body_return_the_same_job(stack: Stack) -> None:
    body = {"prompt": "Idempotent hello", "max_tokens": 4}
    headers = {"Idempotency-Key": f"order-{time.time_ns()}"}
    first = httpx.post(f"{stack.api}/v1/jobs", json=body, headers=headers)
    again = httpx.post(f"{stack.api}/v1/jobs", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    other = httpx.post(f"{stack.api}/v1/jobs", json=body | {"max_tokens": 5}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["type"] == "idempotency_conflict"


def test_concurrent_duplicates_make_exactly_one_job(stack: Stack) -> None:
    body = {"prompt": "Concurrent duplicate", "max_tokens": 4}
    headers = {"Idempotency-Key": f"dup-{time.time_ns()}"}
    with ThreadPoolExecutor(12) as pool:
        responses = list(
            pool.map(
                lambda _: httpx.post(f"{stack.api}/v1/jobs", json=body, headers=headers), range(12)
            )
        )
    assert sorted(r.status_code for r in responses) == [200] * 11 + [202]
    assert len({r.json()["id"] for r in responses}) == 1
    assert wait_for_job(stack.api, responses[0].json()["id"])["status"] == "succeeded"


def test_a_flood_is_refused_with_429_and_every_accepted_job_completes(
    stack: Stack, parked_api: ParkedApi
) -> None:
    """The parked API allows 5 waiting jobs; its jobs wait until released to the worker."""

    def submit(i: int) -> httpx.Response:
        return httpx.post(
            f"{parked_api.url}/v1/jobs", json={"prompt": f"flood {i}", "max_tokens": 4}
        )

    client = redis.Redis.from_url(stack.redis_url)
    waiting_before = int(client.get(QUEUED_COUNT) or 0)
    client.close()
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(submit, range(40)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {202, 429}, codes
    refused = [r for r in responses if r.status_code == 429]
    accepted = [r.json()["id"] for r in responses if r.status_code == 202]
    # The limit is checked in the same atomic step that stores the job: never one over.
    assert len(accepted) == 5 - waiting_before
    assert refused[0].json()["error"]["type"] == "overloaded"
    assert int(refused[0].headers["Retry-After"]) >= 1
    assert parked_api.release() == len(accepted)
    for job_id in accepted:
        assert wait_for_job(stack.api, job_id)["status"] == "succeeded"


def test_a_body_over_the_limit_is_413(stack: Stack) -> None:
    big = {"prompt": "x" * (2 << 20)}
    response = httpx.post(f"{stack.api}/v1/jobs", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_entity_too_large"

    def chunks():  # no Content-Length: the limit counts what is read
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = httpx.post(
        f"{stack.api}/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]["message"]


def test_deadlines_cancel_late_jobs_unrun_and_abort_running_ones(
    stack: Stack, parked_api: ParkedApi
) -> None:
    late = httpx.post(
        f"{parked_api.url}/v1/jobs",
        json={"prompt": "late", "max_tokens": 4},
        headers={"Cancel-After": "0.5"},
    ).json()
    assert late["input"]["deadline_s"] == 0.5
    time.sleep(1.0)
    assert parked_api.release() == 1
    job = wait_for_job(stack.api, late["id"])
    assert job["status"] == "canceled" and job["error"]["type"] == "deadline"
    assert job["started_at"] is None and job["output"] is None

    body = {"prompt": "Count slowly.", "max_tokens": 4000, "min_tokens": 4000, "deadline_s": 3}
    job = wait_for_job(stack.api, httpx.post(f"{stack.api}/v1/jobs", json=body).json()["id"])
    assert job["status"] == "canceled" and job["error"]["type"] == "deadline"
    assert job["error"]["message"] == "reached its deadline while running"
    assert 0 < job["metrics"]["output_tokens"] < 4000
    assert job["metrics"]["total_ms"] < 3000 + 2000


def test_a_redis_restart_loses_no_accepted_job(stack: Stack, parked_api: ParkedApi) -> None:
    """Jobs accepted and waiting, then Redis stops and starts again (AOF): every job is still
    there and completes; the API and the worker reconnect on their own."""
    ids = [
        httpx.post(
            f"{parked_api.url}/v1/jobs", json={"prompt": f"survive {i}", "max_tokens": 4}
        ).json()["id"]
        for i in range(5)
    ]
    time.sleep(1.5)  # appendfsync everysec: what was accepted over a second ago is on disk
    stack.redis_server.stop()
    stack.redis_server.start()
    assert parked_api.release() == 5
    for job_id in ids:
        assert wait_for_job(stack.api, job_id)["status"] == "succeeded"
    wait_until(lambda: httpx.get(f"{stack.api}/readyz").status_code == 200, 30, "ready again")
    fresh = httpx.post(f"{stack.api}/generate", json={"prompt": "Still there?", "max_tokens": 8})
    assert fresh.status_code == 200, fresh.text


def test_a_worker_killed_mid_job_loses_nothing_and_its_job_resumes(stack: Stack) -> None:
    """kill -9 the worker (and its engine) mid-generation; a new worker comes up warm, finds the
    job's lapsed lease, and runs it to the end: one record, two starts, never two at once. The
    second run goes on from the tokens the first left in the job's stream, and the greedy job's
    text is the one an uninterrupted run of it gives."""
    job_id = _frozen_mid_job(stack, "Tell a long tale.", 400)
    first = httpx.get(f"{stack.api}/v1/jobs/{job_id}").json()
    os.killpg(stack.worker.pid, signal.SIGKILL)
    stack.worker.wait()
    wait_until(lambda: httpx.get(f"{stack.api}/readyz").status_code == 503, 15, "worker gone")
    assert httpx.get(f"{stack.api}/v1/jobs/{job_id}").json()["status"] == "processing"

    stack.start_worker(name=f"genq-test-replacement-{os.getpid()}@localhost")
    warm_at = stack.worker_info()["ready_at"]
    job = wait_for_job(stack.api, job_id, timeout_s=150)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["worker"] == stack.worker_name != first["worker"]
    assert job["metrics"]["output_tokens"] == 400
    assert ts(job["started_at"]) >= warm_at  # the second run began on the new, warm worker
    assert ts(job["completed_at"]) - warm_at < 120
    assert 0 < job["resumed_at_token"] < 400, job
    whole_id = _start_long_job(stack, "Tell a long tale.", 400)
    whole = wait_for_job(stack.api, whole_id, timeout_s=150)
    assert whole["attempts"] == 1 and whole["resumed_at_token"] is None
    assert job["output"]["text"] == whole["output"]["text"]


def test_a_dead_engine_hands_its_jobs_back_and_the_worker_exits(stack: Stack) -> None:
    """kill -9 the engine core under a running job: the worker gives the job back and exits
    non-zero (to be restarted), /readyz says no worker is warm, the job finishes elsewhere."""
    job_id = _frozen_mid_job(stack, "A long engine-killing tale.", 400)
    worker = psutil.Process(stack.worker.pid)
    (core,) = [p for p in worker.children(recursive=True) if "EngineCore" in p.name()]
    core.kill()
    os.killpg(stack.worker.pid, signal.SIGCONT)
    assert stack.worker.wait(60) == 70
    readyz = httpx.get(f"{stack.api}/readyz")
    assert readyz.status_code == 503 and readyz.json()["error"]["type"] == "not_ready"
    stack.start_worker(name=f"genq-test-after-engine-death-{os.getpid()}@localhost")
    job = wait_for_job(stack.api, job_id, timeout_s=150)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job


def test_a_worker_whose_engine_cannot_load_exits_non_zero(stack: Stack) -> None:
    env = stack.env | {"GENQ_MODEL": "/nonexistent/model", "GENQ_WORKER_NAME": "genq-broken@x"}
    worker = start_role("worker", env, stack.logs / "broken-worker.log")
    try:
        assert worker.wait(120) != 0
    finally:
        stop_role(worker)
    names = [w["name"] for w in httpx.get(f"{stack.api}/v1/workers").json()["workers"]]
    assert "genq-broken@x" not in names


def test_sigterm_lets_short_jobs_finish_and_hands_long_ones_back(stack: Stack) -> None:
    """The stack's workers have GENQ_SHUTDOWN_GRACE_S=10: SIGTERM stops taking jobs, lets a job
    that ends within 10 s end, gives the other back, and exits 0; the next worker finishes it."""
    # 1000 tokens: over a minute on the CPU engine, far past the grace; 16 tokens take 1-3 s,
    # also on a slow day (the engine's two jobs at ~6-15 tokens/s each).
    long_id = _start_long_job(stack, "A very long story.", 1000)
    short_id = _start_long_job(stack, "A short story.", 16)
    stack.worker.send_signal(signal.SIGTERM)
    assert stack.worker.wait(60) == 0
    short = httpx.get(f"{stack.api}/v1/jobs/{short_id}").json()
    assert short["status"] == "succeeded" and short["attempts"] == 1
    assert httpx.get(f"{stack.api}/v1/jobs/{long_id}").json()["status"] == "processing"

    stack.start_worker(name=f"genq-test-after-sigterm-{os.getpid()}@localhost")
    job = wait_for_job(stack.api, long_id, timeout_s=200)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    assert job["metrics"]["output_tokens"] == 1000


def test_sigterm_on_the_api_finishes_the_requests_in_flight(stack: Stack) -> None:
    with another_api(stack, stack.logs / "api2.log") as (url, api):
        body = {"prompt": "Say something.", "max_tokens": 60, "min_tokens": 60}
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/generate", json=body, timeout=60)
            time.sleep(0.5)
            api.send_signal(signal.SIGTERM)
            response = pending.result()
        assert response.status_code == 200, response.text
        # uvicorn re-raises the signal once its graceful shutdown is done.
        assert api.wait(30) in (0, -signal.SIGTERM)


def test_sigterm_on_the_api_answers_a_wait_its_job_cannot_end_in_time_with_503(
    stack: Stack, tmp_path: Path
) -> None:
    """An API stopped while a POST /generate waits for a job that no worker runs (its queue has
    none): before the shutdown grace (here 2 s) cuts the request, it is answered 503 naming the
    job, which is still queued, rather than a 500."""
    queue = model_queue("genq.nobody", DEFAULT_MODEL_NAME)
    client = redis.Redis.from_url(stack.redis_url)
    env = {"GENQ_QUEUE": "genq.nobody", "GENQ_API_SHUTDOWN_GRACE_S": "2"}
    try:
        with another_api(stack, tmp_path / "stopping-api.log", **env) as (url, api):
            with ThreadPoolExecutor(1) as pool:
                body = {"prompt": "Nobody runs this.", "max_tokens": 8}
                pending = pool.submit(httpx.post, f"{url}/generate", json=body, timeout=60)
                wait_until(lambda: client.llen(queue) == 1, 30, "the job queued")
                api.send_signal(signal.SIGTERM)
                response = pending.result()
            assert api.wait(30) in (0, -signal.SIGTERM)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert error["type"] == "unavailable" and "shutting down" in error["message"]
        (job_id,) = re.findall(r"poll /v1/jobs/(\w+) ", error["message"])
        assert httpx.get(f"{stack.api}/v1/jobs/{job_id}").json()["status"] == "queued"
        assert httpx.post(f"{stack.api}/v1/jobs/{job_id}/cancel").status_code == 200
    finally:
        client.delete(queue)
        client.close()


def test_expired_jobs_answer_404(stack: Stack, tmp_path: Path) -> None:
    env = {"GENQ_QUEUE": "genq.ttl", "GENQ_RESULT_TTL_S": "2"}
    with another_api(stack, tmp_path / "ttl-api.log", **env) as (url, _):
        job_id = httpx.post(f"{url}/v1/jobs", json={"prompt": "short-lived"}).json()["id"]
        assert httpx.post(f"{url}/v1/jobs/{job_id}/cancel").json()["status"] == "canceled"
        assert httpx.get(f"{stack.api}/v1/jobs/{job_id}").status_code == 200
        time.sleep(3)
        gone = httpx.get(f"{stack.api}/v1/jobs/{job_id}")
        assert gone.status_code == 404 and "expired" in gone.json()["error"]["message"]
        assert httpx.post(f"{stack.api}/v1/jobs/{job_id}/cancel").status_code == 404
