"""Several models behind one API, each with its own queue and workers (genq.contract.models): the
session's worker serves the default model; this module starts a second real worker that serves the
same weights under another name, ``smollm-b``, and routes jobs between the two."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
import redis

from genq.contract.constants import MODELS_KEY, model_queue
from tests.e2e.conftest import (
    WORKER_READY_TIMEOUT_S,
    Stack,
    free_port,
    start_role,
    stop_role,
    wait_for_job,
    wait_until,
)
from worker.model_files import DEFAULT_MODEL_NAME

B = "smollm-b"
PROMPT = "What is the capital of France?"
ASK = [{"role": "user", "content": PROMPT}]


@dataclass
class SecondModel:
    worker: str
    before_start: httpx.Response  # POST /v1/jobs for B before any worker of it started


@pytest.fixture(scope="module")
def second_model(stack: Stack) -> Iterator[SecondModel]:
    before = httpx.post(f"{stack.api}/v1/jobs", json={"prompt": PROMPT, "model": B})
    name = f"genq-test-b-{os.getpid()}@localhost"
    env = stack.env | {
        "GENQ_MODEL": stack.first_worker["model_path"],  # the same weights, under another name
        "GENQ_MODEL_NAME": B,
        "GENQ_WORKER_NAME": name,
        "GENQ_WORKER_HTTP_PORT": str(free_port()),
        "GENQ_WORKER_CONCURRENCY": "8",
        "GENQ_WARMUP__PROMPT_TOKENS": "[16]",
    }
    worker = start_role("worker", env, stack.logs / "worker-b.log")
    try:

        def warm() -> bool:
            workers = httpx.get(f"{stack.api}/v1/workers").json()["workers"]
            return any(w["name"] == name for w in workers)

        wait_until(warm, WORKER_READY_TIMEOUT_S, "the second model's worker warm", worker)
        yield SecondModel(name, before)
    finally:
        stop_role(worker)
        # The later modules' stack serves one model again (a registration stays a week).
        redis.Redis.from_url(stack.redis_url).hdel(MODELS_KEY, B)


def submit(stack: Stack, **body: object) -> str:
    response = httpx.post(f"{stack.api}/v1/jobs", json={"max_tokens": 24} | body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_a_model_no_worker_serves_is_422_naming_those_served(
    stack: Stack, second_model: SecondModel
) -> None:
    before = second_model.before_start
    assert before.status_code == 422, before.text
    assert before.json()["error"]["type"] == "model_not_found"
    assert f"model {B!r} is not served here" in before.json()["error"]["message"]
    after = httpx.post(f"{stack.api}/v1/jobs", json={"prompt": PROMPT, "model": "nope"})
    assert after.status_code == 422
    assert f"models: {DEFAULT_MODEL_NAME}, {B}" in after.json()["error"]["message"]


def test_jobs_run_on_their_models_workers(stack: Stack, second_model: SecondModel) -> None:
    ids = {
        None: [submit(stack, messages=ASK) for _ in range(3)],
        DEFAULT_MODEL_NAME: [submit(stack, messages=ASK, model=DEFAULT_MODEL_NAME)],
        B: [submit(stack, messages=ASK, model=B) for _ in range(3)],
    }
    jobs = {model: [wait_for_job(stack.api, i) for i in job_ids] for model, job_ids in ids.items()}
    for model, worker in ((None, stack.worker_name), (B, second_model.worker)):
        for job in jobs[model]:
            assert job["status"] == "succeeded", job
            assert job["model"] == (model or DEFAULT_MODEL_NAME)
            assert job["worker"] == worker
    # Same weights, greedy decoding: both engines give the same text.
    (text,) = {job["output"]["text"] for runs in jobs.values() for job in runs}
    assert "Paris" in text


def test_a_batch_spreads_over_the_models_it_names(stack: Stack, second_model: SecondModel) -> None:
    body = {
        "model": B,
        "max_tokens": 8,
        "items": [{"prompt": "One."}, {"prompt": "Two.", "model": DEFAULT_MODEL_NAME}],
    }
    batch = httpx.post(f"{stack.api}/v1/batches", json=body)
    assert batch.status_code == 202, batch.text
    first, second = (wait_for_job(stack.api, j["id"]) for j in batch.json()["jobs"])
    assert (first["model"], first["worker"]) == (B, second_model.worker)
    assert (second["model"], second["worker"]) == (DEFAULT_MODEL_NAME, stack.worker_name)
    refused = httpx.post(
        f"{stack.api}/v1/batches", json={"items": [{"prompt": "x"}, {"prompt": "y", "model": "z"}]}
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["message"].startswith("items.1.model: model 'z'")


def test_models_lists_each_with_its_warm_workers(stack: Stack, second_model: SecondModel) -> None:
    models = httpx.get(f"{stack.api}/v1/models").json()
    assert models["object"] == "list"
    listed = {m["id"]: m for m in models["data"]}
    assert set(listed) == {DEFAULT_MODEL_NAME, B}
    assert listed[B]["warm_workers"] == 1 and listed[DEFAULT_MODEL_NAME]["warm_workers"] == 1
    assert listed[B]["object"] == "model" and listed[B]["created"] > 0
    assert httpx.get(f"{stack.api}/v1/models/{B}").json() == listed[B]
    assert httpx.get(f"{stack.api}/v1/models/nope").status_code == 404
    workers = {w["name"]: w for w in httpx.get(f"{stack.api}/v1/workers").json()["workers"]}
    assert workers[second_model.worker]["queue"] == model_queue("genq.generate", B)
    assert workers[second_model.worker]["model_path"] == stack.first_worker["model_path"]


def test_the_openai_front_routes_by_model(stack: Stack, second_model: SecondModel) -> None:
    client = openai.OpenAI(base_url=f"{stack.api}/v1", api_key="unused")
    answer = client.chat.completions.with_raw_response.create(
        model=B, messages=[{"role": "user", "content": PROMPT}], max_tokens=16, temperature=0
    )
    job = httpx.get(f"{stack.api}/v1/jobs/{answer.headers['x-genq-job-id']}").json()
    assert job["worker"] == second_model.worker
    assert answer.parse().model == B
    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_a_burst_on_one_model_does_not_hold_up_another(
    stack: Stack, second_model: SecondModel
) -> None:
    """Twice as many default-model jobs as its worker runs at once (32): B's job, sent after them
    all, starts at once on B's worker and ends while the burst is still running or waiting (in
    which wave it ends depends on how the two engines share the cores: a CI run once saw it end
    just after the first 32)."""
    burst = [
        submit(stack, prompt=f"Count to {i}.", max_tokens=256, min_tokens=256) for i in range(64)
    ]

    def statuses() -> dict[str, int]:
        every = [httpx.get(f"{stack.api}/v1/jobs/{i}").json()["status"] for i in burst]
        return {s: every.count(s) for s in set(every)}

    try:
        time.sleep(1.0)  # the burst has filled the default model's worker
        waiting = redis.Redis.from_url(stack.redis_url).llen(
            model_queue("genq.generate", DEFAULT_MODEL_NAME)
        )
        assert waiting > 0, f"the burst should have jobs still waiting; its jobs: {statuses()}"
        quick = wait_for_job(stack.api, submit(stack, prompt=PROMPT, model=B))
        assert quick["status"] == "succeeded"
        assert quick["metrics"]["queue_ms"] < 1000, quick["metrics"]
        after = statuses()  # how far B's job got ahead: it did not wait for the burst to end
        assert after.get("queued", 0) + after.get("processing", 0) > 0, after
    finally:
        for job_id in burst:
            httpx.post(f"{stack.api}/v1/jobs/{job_id}/cancel")
