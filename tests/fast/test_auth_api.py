"""api.auth against a real Redis, no worker (jobs stay queued): keys required on every /v1 route
and /generate, ownership (another key's job is 404), the per-key request rate and active-jobs
limits, and the keys file reloaded while the API runs. The real stack: tests/e2e/test_auth.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api import access, auth
from api.app import create_app
from genq.contract.keys import create_key, revoke_key
from genq.contract.settings import ApiSettings
from genq.store.embedded import EmbeddedRedis

JOB = {"prompt": "hi", "max_tokens": 4}


@pytest.fixture
def flushed(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    return redis_server.url


class Keys:
    def __init__(self, path: Path):
        self.path = path
        self.alice = create_key(path, "alice")
        self.bob = create_key(path, "bob")
        self.slow = create_key(path, "slow", rate_limit_rps=1, rate_limit_burst=2)
        self.busy = create_key(path, "busy", max_active_jobs=2)
        # An interval (1e-6 ms) below what a double holds beside the clock's ms (~1.8e12).
        self.fast = create_key(path, "fast", rate_limit_rps=1e9, rate_limit_burst=1)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(flushed: str, tmp_path: Path) -> Iterator[tuple[TestClient, Keys]]:
    keys = Keys(tmp_path / "api_keys.json")
    settings = ApiSettings(redis_url=flushed, api_keys_file=keys.path)
    with TestClient(create_app(settings)) as client:
        yield client, keys


def _dependency_calls(dependant) -> set:
    calls = {dependant.call}
    for sub in dependant.dependencies:
        calls |= _dependency_calls(sub)
    return calls


def test_every_v1_route_and_generate_needs_a_key() -> None:
    """Checked on the app as built, so that a route added later without ``CallerDep`` fails."""
    app = create_app(ApiSettings(redis_url="redis://127.0.0.1:1/0"))
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    guarded = {r.path for r in routes if auth._caller in _dependency_calls(r.dependant)}
    must = {r.path for r in routes if r.path.startswith("/v1/") or r.path == "/generate"}
    assert must and must <= guarded, must - guarded
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/workers", "/v1/queue", "/generate"} <= must
    assert not {"/healthz", "/readyz", "/metrics"} & guarded


def test_without_keys_anyone_may_call_and_a_warning_says_so(
    flushed: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ApiSettings(redis_url=flushed, api_keys_file=tmp_path / "absent.json")
    with caplog.at_level(logging.WARNING, logger="api.access"):
        with TestClient(create_app(settings)) as client:
            job = client.post("/v1/jobs", json=JOB)
            assert job.status_code == 202
            assert client.get(f"/v1/jobs/{job.json()['id']}").status_code == 200
            assert client.get("/v1/queue").status_code == 200
    assert any("DEV MODE" in r.getMessage() and "anyone" in r.getMessage() for r in caplog.records)
    # Dev mode touches no Redis key of the limits.
    keys = redis.Redis.from_url(flushed, decode_responses=True).keys("genq:*")
    assert not [k for k in keys if "ratelimit" in k or "owner" in k], keys


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "an API key is needed"),
        ({"Authorization": "Bearer gq_not-a-key"}, "unknown or revoked API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "must be 'Bearer <key>'"),
        ({"Authorization": "Bearer "}, "must be 'Bearer <key>'"),
        ({"Authorization": "gq_abc"}, "must be 'Bearer <key>'"),
    ],
)
def test_no_or_bad_key_is_401_everywhere_but_health_and_metrics(
    keyed: tuple[TestClient, Keys], headers: dict[str, str], fragment: str
) -> None:
    client, _ = keyed
    for method, path, body in [
        ("POST", "/v1/jobs", JOB),
        ("GET", "/v1/jobs/abc", None),
        ("POST", "/v1/jobs/abc/cancel", None),
        ("POST", "/v1/jobs/abc/webhooks/redeliver", None),
        ("GET", "/v1/workers", None),
        ("GET", "/v1/queue", None),
        ("POST", "/generate", {"prompt": "hi"}),
    ]:
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "unauthorized"
        assert fragment in response.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503  # open; not ready: no worker
    assert client.get("/metrics").status_code == 200


def test_a_job_is_its_keys_alone(keyed: tuple[TestClient, Keys]) -> None:
    client, keys = keyed
    made = client.post("/v1/jobs", json=JOB, headers=bearer(keys.alice))
    assert made.status_code == 202
    job_id = made.json()["id"]
    assert "owner" not in made.json()  # the public job does not name keys
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/webhooks/redeliver"),
    ]:
        other = client.request(method, path, headers=bearer(keys.bob))
        unknown = client.request(method, path.replace(job_id, "0" * 32), headers=bearer(keys.bob))
        assert other.status_code == unknown.status_code == 404
        # Word for word what an unknown id gets, but for the id: nothing to tell them apart.
        assert (
            other.json()["error"]["message"].replace(job_id, "0" * 32)
            == (unknown.json()["error"]["message"])
        )
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(keys.alice)).json()["status"] == "queued"
    redeliver = client.post(f"/v1/jobs/{job_id}/webhooks/redeliver", headers=bearer(keys.alice))
    assert redeliver.status_code == 409  # past the ownership check: it has no webhook
    canceled = client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(keys.alice))
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"


def test_idempotency_keys_belong_to_their_api_key(keyed: tuple[TestClient, Keys]) -> None:
    client, keys = keyed
    same = {"Idempotency-Key": "order-1"}
    first = client.post("/v1/jobs", json=JOB, headers=bearer(keys.alice) | same)
    again = client.post("/v1/jobs", json=JOB, headers=bearer(keys.alice) | same)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    bobs = client.post("/v1/jobs", json=JOB, headers=bearer(keys.bob) | same)
    assert bobs.status_code == 202 and bobs.json()["id"] != first.json()["id"]


def test_requests_per_second_limit_then_allowed_again(keyed: tuple[TestClient, Keys]) -> None:
    client, keys = keyed
    # "slow": 1 request/s, a burst of 2.
    answers = [client.get("/v1/queue", headers=bearer(keys.slow)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.json()["error"]["type"] == "rate_limited"
    assert "rate limit of 1 requests/s (burst 2)" in refused.json()["error"]["message"]
    assert refused.headers["Retry-After"] == "1"
    assert client.get("/v1/queue", headers=bearer(keys.bob)).status_code == 200  # per key
    fast = [client.get("/v1/queue", headers=bearer(keys.fast)).status_code for _ in range(5)]
    assert fast == [200] * 5
    time.sleep(int(refused.headers["Retry-After"]) + 0.05)
    assert client.get("/v1/queue", headers=bearer(keys.slow)).status_code == 200
    assert client.get("/v1/queue", headers=bearer(keys.slow)).status_code == 429


def test_active_jobs_limit_then_allowed_again_once_one_ends(
    keyed: tuple[TestClient, Keys],
) -> None:
    client, keys = keyed
    # "busy": at most 2 jobs queued or processing. No worker here: they stay queued.
    ids = [client.post("/v1/jobs", json=JOB, headers=bearer(keys.busy)).json()["id"] for _ in "ab"]
    refused = client.post("/v1/jobs", json=JOB, headers=bearer(keys.busy))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "rate_limited"
    assert "2 jobs queued or processing" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    # /generate counts the same jobs.
    assert (
        client.post("/generate", json={"prompt": "x"}, headers=bearer(keys.busy)).status_code == 429
    )
    assert client.post("/v1/jobs", json=JOB, headers=bearer(keys.alice)).status_code == 202
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=bearer(keys.busy))
    assert client.post("/v1/jobs", json=JOB, headers=bearer(keys.busy)).status_code == 202
    assert client.post("/v1/jobs", json=JOB, headers=bearer(keys.busy)).status_code == 429


def test_keys_created_or_revoked_apply_without_a_restart(keyed: tuple[TestClient, Keys]) -> None:
    client, keys = keyed
    new = create_key(keys.path, "new")
    deadline = time.monotonic() + access.RELOAD_CHECK_S + 2
    while client.get("/v1/queue", headers=bearer(new)).status_code != 200:
        assert time.monotonic() < deadline, "a new key was not picked up"
        time.sleep(0.1)
    revoke_key(keys.path, "new")
    deadline = time.monotonic() + access.RELOAD_CHECK_S + 2
    while client.get("/v1/queue", headers=bearer(new)).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.1)
    assert client.get("/v1/queue", headers=bearer(keys.alice)).status_code == 200
