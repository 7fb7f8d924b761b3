"""Several models behind one API (genq.contract.models), against a real Redis and no worker: each job
goes to its model's queue and counts against its model's limit only; unknown models are refused
with nothing written; GET /v1/models and GET /v1/queue show each model."""

from __future__ import annotations

import base64
import json
import time

import redis
from fastapi.testclient import TestClient
from redis.asyncio import Redis

from api.app import create_app
from genq.contract.constants import (
    MODEL_QUEUED_PREFIX,
    QUEUED_COUNT,
    WORKERS_SET,
    model_queued_key,
    worker_key,
)
from genq.contract.schemas import JobInput, JobRecord, JobStatus, SamplingOptions, WorkerInfo
from genq.contract.settings import ApiSettings
from genq.store.embedded import EmbeddedRedis
from genq.store.jobs import JobStore

QUEUE_A, QUEUE_B = "genq.generate.a", "genq.generate.b"


def api(redis_server: EmbeddedRedis, **overrides) -> TestClient:
    """An API declaring models a and b, two jobs of each at most waiting."""
    fields = {"redis_url": redis_server.url, "models": ["a", "b"], "max_queued": 2}
    return TestClient(create_app(ApiSettings(**(fields | overrides))))


def counters(client: redis.Redis) -> tuple[str | None, str | None, str | None]:
    """Jobs waiting: of a, of b, in all."""
    return tuple(client.mget(model_queued_key("a"), model_queued_key("b"), QUEUED_COUNT))


def written(client: redis.Redis) -> tuple:
    """Everything a submit writes: both queues, the counters, the job hashes."""
    jobs = sorted(k for k in client.keys("genq:job:*") if k.count(":") == 2)
    return client.lrange(QUEUE_A, 0, -1), client.lrange(QUEUE_B, 0, -1), counters(client), jobs


def payload(message: str) -> dict:
    """The job payload of a Celery message as the API pushed it (protocol 2: args, kwargs, embed)."""
    args, _, _ = json.loads(base64.b64decode(json.loads(message)["body"]))
    return args[0]


def submit(client: TestClient, model: str | None = None) -> str:
    body = {"prompt": "hi"} | ({"model": model} if model else {})
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def warm_worker(
    client: redis.Redis,
    name: str,
    model: str,
    ready_at: float,
    jobs_per_s: float = 0.0,
    features: list[str] | None = None,
) -> None:
    """A stand-in for a worker's heartbeat: exactly what a warm worker of ``model`` writes
    (worker.host.runtime), with no worker behind it."""
    info = WorkerInfo(
        name=name,
        model=model,
        queue=f"genq.generate.{model}",
        concurrency=8,
        ready_at=ready_at,
        startup_s={"total": 1.0},
        heartbeat_at=time.time(),
        jobs_running=3,
        jobs_per_s=jobs_per_s,
        features=features or [],
    )
    client.set(worker_key(name), info.model_dump_json(), ex=60)
    client.sadd(WORKERS_SET, name)


# -- jobs --------------------------------------------------------------------------------------


def test_a_job_naming_no_model_goes_to_the_first_declared(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    with api(redis_server) as client:
        job_id = submit(client)
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["model"] == "a"
    (message,) = sync_redis.lrange(QUEUE_A, 0, -1)
    assert payload(message)["id"] == job_id and payload(message)["model"] == "a"
    assert json.loads(message)["properties"]["delivery_info"]["routing_key"] == QUEUE_A
    assert sync_redis.llen(QUEUE_B) == 0
    assert counters(sync_redis) == ("1", None, "1")


def test_a_job_of_b_goes_to_b_s_queue(redis_server: EmbeddedRedis, sync_redis: redis.Redis) -> None:
    with api(redis_server) as client:
        job_id = submit(client, "b")
        assert client.get(f"/v1/jobs/{job_id}").json()["model"] == "b"
    (message,) = sync_redis.lrange(QUEUE_B, 0, -1)
    assert payload(message)["model"] == "b"
    assert sync_redis.llen(QUEUE_A) == 0
    assert counters(sync_redis) == (None, "1", "1")


def test_an_unknown_model_is_refused_with_nothing_enqueued(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    with api(redis_server) as client:
        submit(client, "a")
        before = written(sync_redis)
        response = client.post("/v1/jobs", json={"prompt": "hi", "model": "zzz"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "model_not_found"
    assert error["message"] == "model 'zzz' is not served here; models: a, b"
    assert written(sync_redis) == before
    assert sync_redis.keys(MODEL_QUEUED_PREFIX + "*") == [model_queued_key("a")]


def test_each_model_has_its_own_limit(redis_server: EmbeddedRedis, sync_redis: redis.Redis) -> None:
    with api(redis_server) as client:
        submit(client, "a")
        submit(client)  # the default: a
        full = client.post("/v1/jobs", json={"prompt": "hi", "model": "a"})
        assert full.status_code == 429
        assert full.json()["error"]["type"] == "overloaded"
        assert "for model 'a' (limit 2)" in full.json()["error"]["message"]
        assert int(full.headers["retry-after"]) >= 1
        submit(client, "b")  # b's queue is not a's
    assert counters(sync_redis) == ("2", "1", "3")
    assert (sync_redis.llen(QUEUE_A), sync_redis.llen(QUEUE_B)) == (2, 1)


def test_retry_after_goes_by_the_full_model_s_workers_only(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    warm_worker(sync_redis, "w-b", "b", ready_at=time.time(), jobs_per_s=100.0)
    with api(redis_server) as client:
        submit(client, "a")
        submit(client, "a")
        no_rate = client.post("/v1/jobs", json={"prompt": "hi", "model": "a"})
        warm_worker(sync_redis, "w-a", "a", ready_at=time.time(), jobs_per_s=0.5)
        slow = client.post("/v1/jobs", json={"prompt": "hi", "model": "a"})
    # None of a's workers has a rate: 5 s; b's fast worker does not count. Then 1 job over the
    # limit at a's 0.5 jobs/s: 2 s.
    assert (no_rate.status_code, no_rate.headers["retry-after"]) == (429, "5")
    assert (slow.status_code, slow.headers["retry-after"]) == (429, "2")


def test_canceling_a_queued_job_counts_its_model_down(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    with api(redis_server) as client:
        job_id = submit(client, "b")
        submit(client, "a")
        response = client.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "canceled"
        assert counters(sync_redis) == ("1", "0", "1")
        submit(client, "b")
        submit(client, "b")  # both of b's places are free again
    assert counters(sync_redis) == ("1", "2", "3")


def test_generate_with_an_unknown_model_is_refused_at_once(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    with api(redis_server, generate_timeout_s=5) as client:  # a wait would end in 504
        t0 = time.monotonic()
        response = client.post("/generate", json={"prompt": "hi", "model": "zzz"})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "model_not_found"
    assert time.monotonic() - t0 < 2
    assert written(sync_redis) == ([], [], (None, None, None), [])


# -- batches -----------------------------------------------------------------------------------


def test_batch_items_inherit_the_batch_model_unless_they_name_one(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    body = {"model": "b", "items": [{"prompt": "x"}, {"prompt": "y", "model": "a"}]}
    with api(redis_server) as client:
        response = client.post("/v1/batches", json=body)
        assert response.status_code == 202, response.text
        first, second = (client.get(j["url"]).json() for j in response.json()["jobs"])
    assert (first["model"], second["model"]) == ("b", "a")
    (on_b,) = sync_redis.lrange(QUEUE_B, 0, -1)
    (on_a,) = sync_redis.lrange(QUEUE_A, 0, -1)
    assert payload(on_b)["id"] == first["id"] and payload(on_b)["model"] == "b"
    assert payload(on_a)["id"] == second["id"] and payload(on_a)["model"] == "a"
    assert counters(sync_redis) == ("1", "1", "2")


def test_a_batch_overflowing_one_model_is_refused_whole(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    with api(redis_server) as client:
        submit(client, "a")
        before = written(sync_redis)
        two_of_a = [{"prompt": "x", "model": "a"}, {"prompt": "y", "model": "a"}]
        full = client.post("/v1/batches", json={"items": two_of_a})
        assert full.status_code == 429, full.text
        assert "for model 'a'" in full.json()["error"]["message"]
        assert "a batch of 2 does not fit" in full.json()["error"]["message"]
        assert written(sync_redis) == before
        assert sync_redis.keys("genq:batch:*") == []
        # As many jobs, one per model, fit: each model has room for its own.
        split = [{"prompt": "x", "model": "a"}, {"prompt": "y", "model": "b"}]
        assert client.post("/v1/batches", json={"items": split}).status_code == 202
    assert counters(sync_redis) == ("2", "1", "3")


def test_a_batch_larger_than_the_limit_fits_when_no_model_exceeds_it(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    split = [{"prompt": p, "model": m} for p, m in (("x", "a"), ("y", "a"), ("z", "b"))]
    with api(redis_server) as client:
        response = client.post("/v1/batches", json={"items": split})
    assert response.status_code == 202, response.text
    assert counters(sync_redis) == ("2", "1", "3")


def test_canceling_a_batch_counts_each_model_down(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    body = {"items": [{"prompt": "x", "model": "b"}, {"prompt": "y"}]}
    with api(redis_server) as client:
        batch = client.post("/v1/batches", json=body).json()
        assert counters(sync_redis) == ("1", "1", "2")
        response = client.post(f"/v1/batches/{batch['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["canceled"] == 2
    assert counters(sync_redis) == ("0", "0", "0")


def test_a_batch_item_with_an_unknown_model_is_refused(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    body = {"items": [{"prompt": "x"}, {"prompt": "y", "model": "zzz"}]}
    with api(redis_server) as client:
        response = client.post("/v1/batches", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "model_not_found"
    assert error["message"] == "items.1.model: model 'zzz' is not served here; models: a, b"
    assert written(sync_redis) == ([], [], (None, None, None), [])


# -- what is served, what waits ----------------------------------------------------------------


def test_models_lists_each_model_with_its_workers_and_jobs(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    with api(redis_server) as client:
        submit(client, "b")
        submit(client, "b")
        submit(client, "a")
        listed = client.get("/v1/models").json()
        assert listed == {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "genq",
                    "warm_workers": 0,
                    "queued": queued,
                }
                for name, queued in (("a", 1), ("b", 2))
            ],
        }
        warm_worker(sync_redis, "w-b", "b", ready_at=1_700_000_000.75)
        listed = client.get("/v1/models").json()
        one = client.get("/v1/models/b")
        missing = client.get("/v1/models/nope")
    a, b = listed["data"]
    assert (a["warm_workers"], a["created"]) == (0, 0)
    assert (b["warm_workers"], b["created"], b["queued"]) == (1, 1_700_000_000, 2)
    assert one.status_code == 200 and one.json() == b
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "model_not_found"


def test_a_hub_id_model_is_served_by_its_whole_name(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    hub = "meta-llama/Llama-3.1-8B"
    with api(redis_server, models=[hub]) as client:
        submit(client, hub)
        one = client.get(f"/v1/models/{hub}")
    assert one.status_code == 200 and (one.json()["id"], one.json()["queued"]) == (hub, 1)
    assert sync_redis.llen(f"genq.generate.{hub}") == 1


def test_queue_status_per_model(redis_server: EmbeddedRedis, sync_redis: redis.Redis) -> None:
    warm_worker(sync_redis, "w-b", "b", ready_at=time.time())
    with api(redis_server) as client:
        submit(client, "a")
        submit(client, "b")
        submit(client, "b")
        status = client.get("/v1/queue").json()
    assert (status["depth"], status["running"], status["warm_workers"]) == (3, 3, 1)
    assert set(status["models"]) == {"a", "b"}
    a, b = status["models"]["a"], status["models"]["b"]
    assert (a["depth"], a["running"], a["warm_workers"]) == (1, 0, 0)
    assert (b["depth"], b["running"], b["warm_workers"]) == (2, 3, 1)


def test_openai_front_answers_404_for_an_unknown_model(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    body = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    with api(redis_server) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "model_not_found"
    assert "models: a, b" in response.json()["error"]["message"]
    assert written(sync_redis) == ([], [], (None, None, None), [])


# -- the store's counters ----------------------------------------------------------------------


def record(job_id: str, model: str | None) -> JobRecord:
    return JobRecord(
        id=job_id,
        status=JobStatus.QUEUED,
        model=model,
        created_at=time.time(),
        input=JobInput(prompt="hi", sampling=SamplingOptions()),
    )


def test_claiming_a_job_counts_its_model_down(with_store) -> None:
    async def main(store: JobStore, client: Redis) -> list[list[str | None]]:
        await store.create(record("ja", "a"), message=(QUEUE_A, "m"))
        await store.create(record("jb", "b"), message=(QUEUE_B, "m"))
        keys = [model_queued_key("a"), model_queued_key("b"), QUEUED_COUNT]
        seen = [await client.mget(keys)]
        await store.claim("ja", "w1", time.time(), 30)
        seen.append(await client.mget(keys))
        return seen

    assert with_store(main) == [["1", "1", "2"], ["0", "1", "1"]]


def test_a_job_without_model_counts_only_in_the_total(with_store) -> None:
    async def main(store: JobStore, client: Redis) -> list[object]:
        await store.create(record("old", None), message=(QUEUE_A, "m"))
        seen: list[object] = [await client.get(QUEUED_COUNT)]
        await store.claim("old", "w1", time.time(), 30)
        seen.append(await client.get(QUEUED_COUNT))
        seen.append(await client.keys(MODEL_QUEUED_PREFIX + "*"))
        return seen

    assert with_store(main) == ["1", "0", []]
