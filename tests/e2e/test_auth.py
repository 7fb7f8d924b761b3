"""API keys on the real stack: two more API processes with keys configured, on the session's
Redis (which requires a password) and sharing its real worker, so jobs really run. Missing, wrong
and malformed keys, ownership, the request rate shared by both processes, the active-jobs limit
lifted as jobs finish, keys kept hashed, and `genq keys create` giving a key that works at once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from genq.contract.keys import create_key
from genq.store.embedded import free_port
from tests.e2e.conftest import Stack, start_role, stop_role, wait_until

pytestmark = pytest.mark.engine

# Jobs that take a few seconds on the CPU engine: long enough to be active while a test looks.
LONG_JOB = {"prompt": "Count slowly.", "max_tokens": 160, "min_tokens": 160}
SHORT_JOB = {"prompt": "Say hi.", "max_tokens": 8}


@dataclass
class KeyedApis:
    urls: list[str]  # two API processes, one keys file, one Redis
    keys_file: Path
    keys: dict[str, str]  # name -> key
    logs: list[Path]
    env: dict[str, str]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedApis]:
    tmp = tmp_path_factory.mktemp("auth")
    keys_file = tmp / "api_keys.json"
    keys = {
        "alice": create_key(keys_file, "alice"),
        "bob": create_key(keys_file, "bob"),
        "slow": create_key(keys_file, "slow", rate_limit_rps=1, rate_limit_burst=2),
        "busy": create_key(keys_file, "busy", max_active_jobs=2),
    }
    env = stack.env | {"GENQ_API_KEYS_FILE": str(keys_file)}
    processes, urls, logs = [], [], []
    try:
        for i in range(2):
            port = free_port()
            logs.append(tmp / f"api-{i}.log")
            processes.append(start_role("api", env | {"GENQ_API_PORT": str(port)}, logs[-1]))
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes):
            wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 30, url, process)
        yield KeyedApis(urls, keys_file, keys, logs, env)
    finally:
        for process in processes:
            stop_role(process)


def wait_done(api: str, key: str, job_id: str, timeout_s: float = 120) -> dict:
    def terminal() -> dict | None:
        job = httpx.get(f"{api}/v1/jobs/{job_id}", headers=bearer(key)).json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_until(terminal, timeout_s, f"job {job_id} finished")


def test_dev_mode_warns_and_keys_turn_it_off(stack: Stack, keyed: KeyedApis) -> None:
    assert "DEV MODE" in (stack.logs / "api.log").read_text()  # the session's API has no keys
    text = keyed.logs[0].read_text()
    assert "DEV MODE" not in text and "API keys: 4 configured" in text


def test_missing_wrong_or_malformed_keys_get_401(keyed: KeyedApis) -> None:
    api = keyed.urls[0]
    for headers in (
        {},
        bearer("gq_" + "x" * 43),
        bearer(keyed.keys["alice"] + "x"),
        {"Authorization": keyed.keys["alice"]},  # no scheme
        {"Authorization": f"Basic {keyed.keys['alice']}"},
    ):
        for method, path in [("POST", "/v1/jobs"), ("GET", "/v1/queue"), ("POST", "/generate")]:
            body = {"prompt": "hi"} if method == "POST" else None
            response = httpx.request(method, f"{api}{path}", json=body, headers=headers)
            assert response.status_code == 401, (headers, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "unauthorized"
    assert httpx.get(f"{api}/healthz").status_code == 200
    assert httpx.get(f"{api}/readyz").status_code == 200  # the worker is warm
    assert httpx.get(f"{api}/metrics").status_code == 200


def test_a_job_is_seen_and_canceled_only_with_its_key(keyed: KeyedApis) -> None:
    api, alice, bob = keyed.urls[0], keyed.keys["alice"], keyed.keys["bob"]
    made = httpx.post(f"{api}/v1/jobs", json=SHORT_JOB, headers=bearer(alice))
    assert made.status_code == 202, made.text
    job_id = made.json()["id"]
    done = wait_done(api, alice, job_id)
    assert done["status"] == "succeeded" and done["output"]["text"]  # the real worker ran it
    # Another key: 404 as for an id that does not exist, on every route that takes an id.
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/webhooks/redeliver"),
    ]:
        response = httpx.request(method, f"{api}{path}", headers=bearer(bob))
        assert response.status_code == 404, response.text
        assert response.json()["error"] == {
            "type": "not_found",
            "message": f"no job with id {job_id!r} (unknown or expired)",
        }
    # Its own key gets past the ownership check on each: the job is finished, without webhook.
    assert httpx.post(f"{api}/v1/jobs/{job_id}/cancel", headers=bearer(alice)).status_code == 409
    redeliver = httpx.post(f"{api}/v1/jobs/{job_id}/webhooks/redeliver", headers=bearer(alice))
    assert redeliver.status_code == 409 and "no webhook" in redeliver.text
    # The other API process shares the same jobs and the same rule.
    other = keyed.urls[1]
    assert httpx.get(f"{other}/v1/jobs/{job_id}", headers=bearer(alice)).status_code == 200
    assert httpx.get(f"{other}/v1/jobs/{job_id}", headers=bearer(bob)).status_code == 404

    # A running job: canceled by its key, not by another.
    running = httpx.post(f"{api}/v1/jobs", json=LONG_JOB, headers=bearer(alice)).json()["id"]
    assert httpx.post(f"{api}/v1/jobs/{running}/cancel", headers=bearer(bob)).status_code == 404
    canceled = httpx.post(f"{api}/v1/jobs/{running}/cancel", headers=bearer(alice), timeout=30)
    assert canceled.status_code in (200, 202), canceled.text
    assert wait_done(api, alice, running)["status"] == "canceled"


def test_the_request_rate_is_shared_by_every_api_process(keyed: KeyedApis) -> None:
    first, second = keyed.urls
    slow = bearer(keyed.keys["slow"])  # 1 request/s, a burst of 2
    assert httpx.get(f"{first}/v1/queue", headers=slow).status_code == 200
    assert httpx.get(f"{second}/v1/queue", headers=slow).status_code == 200
    refused = httpx.get(f"{first}/v1/queue", headers=slow)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "rate_limited"
    assert "rate limit of 1 requests/s" in refused.json()["error"]["message"]
    retry_after = int(refused.headers["retry-after"])
    assert retry_after >= 1
    assert httpx.get(f"{second}/v1/queue", headers=bearer(keyed.keys["bob"])).status_code == 200
    time.sleep(retry_after)
    assert httpx.get(f"{second}/v1/queue", headers=slow).status_code == 200


def test_active_jobs_limit_lifts_as_jobs_finish(keyed: KeyedApis) -> None:
    api, busy = keyed.urls[0], keyed.keys["busy"]  # at most 2 jobs queued or processing
    ids = []
    for _ in range(2):
        made = httpx.post(f"{api}/v1/jobs", json=LONG_JOB, headers=bearer(busy))
        assert made.status_code == 202, made.text
        ids.append(made.json()["id"])
    refused = httpx.post(f"{keyed.urls[1]}/v1/jobs", json=SHORT_JOB, headers=bearer(busy))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "rate_limited"
    assert "2 jobs queued or processing" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    statuses = [httpx.get(f"{api}/v1/jobs/{i}", headers=bearer(busy)).json()["status"] for i in ids]
    assert set(statuses) <= {"queued", "processing"}, statuses  # the refusal was while active
    for job_id in ids:
        assert wait_done(api, busy, job_id)["status"] == "succeeded"
    again = httpx.post(f"{api}/v1/jobs", json=SHORT_JOB, headers=bearer(busy))
    assert again.status_code == 202, again.text
    wait_done(api, busy, again.json()["id"])


def test_genq_keys_create_prints_a_key_that_works_and_only_its_hash_is_kept(
    keyed: KeyedApis,
) -> None:
    env = {**os.environ, "GENQ_API_KEYS_FILE": str(keyed.keys_file)}
    made = subprocess.run(
        [sys.executable, "-m", "genq.cli.main", "keys", "create", "carol"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.strip()
    assert key.startswith("gq_")
    stored = keyed.keys_file.read_text()
    for plain in [key, *keyed.keys.values()]:
        assert plain not in stored
        assert hashlib.sha256(plain.encode()).hexdigest() in stored
    names = [k["name"] for k in json.loads(stored)["keys"]]
    assert names == ["alice", "bob", "slow", "busy", "carol"]
    # The running APIs pick the new key up from the file, no restart.
    api = keyed.urls[1]
    job = wait_until(
        lambda: (
            (r := httpx.post(f"{api}/v1/jobs", json=SHORT_JOB, headers=bearer(key))).status_code
            == 202
            and r.json()
        ),
        10,
        "the new key accepted",
    )
    assert wait_done(api, key, job["id"])["status"] == "succeeded"
    assert (
        httpx.get(f"{api}/v1/jobs/{job['id']}", headers=bearer(keyed.keys["alice"])).status_code
        == 404
    )
    listed = subprocess.run(
        [sys.executable, "-m", "genq.cli.main", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "carol\t" in listed and key not in listed


def test_streams_batches_and_the_openai_front_follow_the_same_keys(keyed: KeyedApis) -> None:
    import openai  # noqa: PLC0415 - the test extra

    api, alice, bob = keyed.urls[0], keyed.keys["alice"], keyed.keys["bob"]
    job_id = httpx.post(f"{api}/v1/jobs", json=SHORT_JOB, headers=bearer(alice)).json()["id"]
    assert httpx.get(f"{api}/v1/jobs/{job_id}/stream").status_code == 401
    assert httpx.get(f"{api}/v1/jobs/{job_id}/stream", headers=bearer(bob)).status_code == 404
    with httpx.stream(
        "GET", f"{api}/v1/jobs/{job_id}/stream", headers=bearer(alice), timeout=120
    ) as stream:
        assert stream.status_code == 200
        assert "event: completed" in stream.read().decode()

    batch = httpx.post(
        f"{api}/v1/batches", json={"items": [SHORT_JOB, SHORT_JOB]}, headers=bearer(alice)
    )
    assert batch.status_code == 202, batch.text
    batch_id, first_job = batch.json()["id"], batch.json()["jobs"][0]["id"]
    assert httpx.get(f"{api}/v1/batches/{batch_id}", headers=bearer(bob)).status_code == 404
    assert httpx.post(f"{api}/v1/batches/{batch_id}/cancel", headers=bearer(bob)).status_code == 404
    assert httpx.get(f"{api}/v1/jobs/{first_job}", headers=bearer(bob)).status_code == 404
    assert httpx.get(f"{api}/v1/batches/{batch_id}", headers=bearer(alice)).status_code == 200
    # A batch counts against its key's active jobs: 3 jobs do not fit a key that may have 2.
    too_many = httpx.post(
        f"{api}/v1/batches", json={"items": [SHORT_JOB] * 3}, headers=bearer(keyed.keys["busy"])
    )
    assert too_many.status_code == 429 and "3 more would not fit" in too_many.text

    client = openai.OpenAI(base_url=f"{api}/v1", api_key=alice, max_retries=0)
    model = client.models.list().data[0].id
    completion = client.completions.create(model=model, prompt="Hello", max_tokens=4)
    job = httpx.get(f"{api}/v1/jobs/{completion.id.split('-', 1)[1]}", headers=bearer(bob))
    assert job.status_code == 404  # the OpenAI request's job is alice's
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{api}/v1", api_key="gq_wrong", max_retries=0).models.list()
