"""What a job asks of its output (structured output, n, logprobs), checked by the API against a
real Redis and no worker: a schema that is not JSON Schema, or asks beyond GENQ_MAX_N /
GENQ_MAX_LOGPROBS, or structured output that no warm worker of the model can run, is a 422
naming it, with nothing queued."""

from __future__ import annotations

import time

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from genq.contract.constants import QUEUED_COUNT
from genq.contract.schemas import STRUCTURED_OUTPUT
from genq.contract.settings import ApiSettings
from genq.store.embedded import EmbeddedRedis
from tests.fast.test_model_routing import warm_worker

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}}


def api(redis_server: EmbeddedRedis, **overrides) -> TestClient:
    fields = {"redis_url": redis_server.url, "models": ["a", "b"], "max_n": 4, "max_logprobs": 5}
    return TestClient(create_app(ApiSettings(**(fields | overrides))))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"json_schema": {"type": 12}}, "json_schema: not a valid JSON Schema: 12 is not valid"),
        ({"json_schema": {"minLength": -1}}, "json_schema: not a valid JSON Schema"),
        ({"n": 5}, "n: at most 4 completions per job (GENQ_MAX_N)"),
        ({"logprobs": 6}, "logprobs: at most 5 per token (GENQ_MAX_LOGPROBS)"),
    ],
)
def test_what_the_api_cannot_queue_is_a_422_naming_it(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis, fields: dict, reason: str
) -> None:
    with api(redis_server) as client:
        response = client.post("/v1/jobs", json={"prompt": "hi", **fields})
        batch = client.post(
            "/v1/batches", json={"items": [{"prompt": "ok"}, {"prompt": "hi", **fields}]}
        )
    assert response.status_code == 422, response.text
    assert reason in response.json()["error"]["message"]
    assert batch.status_code == 422 and f"items.1.{reason}" in batch.json()["error"]["message"]
    assert sync_redis.get(QUEUED_COUNT) in (None, "0")


def test_structured_output_no_warm_worker_can_run_is_a_422(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    warm_worker(sync_redis, "old@host", "a", time.time())  # a vLLM without structured output
    with api(redis_server) as client:
        refused = client.post(
            "/v1/jobs", json={"prompt": "hi", "model": "a", "json_schema": SCHEMA}
        )
        plain = client.post("/v1/jobs", json={"prompt": "hi", "model": "a"})
        # No warm worker of b: the job waits for one.
        waits = client.post("/v1/jobs", json={"prompt": "hi", "model": "b", "choice": ["x"]})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["type"] == "unsupported" and "without it" in error["message"]
    assert plain.status_code == 202 and waits.status_code == 202


def test_structured_output_goes_where_a_worker_can_run_it(
    redis_server: EmbeddedRedis, sync_redis: redis.Redis
) -> None:
    warm_worker(sync_redis, "new@host", "a", time.time(), features=[STRUCTURED_OUTPUT])
    with api(redis_server) as client:
        accepted = client.post("/v1/jobs", json={"prompt": "hi", "model": "a", "regex": "[ab]+"})
    assert accepted.status_code == 202, accepted.text
