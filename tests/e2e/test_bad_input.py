"""Bad input over real HTTP: a 4xx with the one error body and a reason; never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import Stack

JSON = {"Content-Type": "application/json"}

CASES = [
    # (path, raw body, expected status, a fragment of the message)
    ("/v1/jobs", b'{"prompt": "unterminated', 422, "not valid JSON"),
    ("/v1/jobs", b"", 422, "required"),
    ("/v1/jobs", b"[]", 422, "valid dictionary"),
    ("/v1/jobs", b'"just a string"', 422, "valid dictionary"),
    ("/v1/jobs", b"{}", 422, "exactly one of 'prompt' or 'messages'"),
    ("/v1/jobs", b'{"prompt": null}', 422, "exactly one"),
    ("/v1/jobs", b'{"prompt": ""}', 422, "prompt: String should have at least 1 character"),
    ("/v1/jobs", b'{"prompt": 42}', 422, "prompt: Input should be a valid string"),
    (
        "/v1/jobs",
        b'{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}',
        422,
        "exactly one",
    ),
    ("/v1/jobs", b'{"messages": "hi"}', 422, "messages: Input should be a valid list"),
    ("/v1/jobs", b'{"messages": [{"role": "bot", "content": "x"}]}', 422, "messages.0.role"),
    ("/v1/jobs", b'{"messages": [{"role": "user"}]}', 422, "messages.0.content: Field required"),
    ("/v1/jobs", b'{"prompt": "a", "max_tokens": 0}', 422, "max_tokens"),
    ("/v1/jobs", b'{"prompt": "a", "max_tokens": "many"}', 422, "max_tokens"),
    ("/v1/jobs", b'{"prompt": "a", "max_tokens": 100000000}', 422, "max_tokens"),
    ("/v1/jobs", b'{"prompt": "a", "min_tokens": 9, "max_tokens": 8}', 422, "min_tokens (9)"),
    ("/v1/jobs", b'{"prompt": "a", "temperature": -0.5}', 422, "temperature"),
    ("/v1/jobs", b'{"prompt": "a", "top_p": 1.5}', 422, "top_p"),
    ("/v1/jobs", b'{"prompt": "a", "stop": [""]}', 422, "empty"),
    ("/v1/jobs", b'{"prompt": "a", "seed": "x"}', 422, "seed"),
    ("/v1/jobs", b'{"prompt": "a", "metadata": [1]}', 422, "metadata"),
    (
        "/v1/jobs",
        b'{"prompt": "a", "max_token": 5}',
        422,
        "max_token: Extra inputs are not permitted",
    ),
    ("/v1/jobs", b'{"prompt": "a", "webhook": "ftp://x.example/"}', 422, "http or https"),
    ("/v1/jobs", b'{"prompt": "a", "webhook": ""}', 422, "webhook"),
    ("/v1/jobs", b'{"prompt": "a", "webhook": 7}', 422, "webhook"),
    ("/v1/jobs", b'{"prompt": "a", "webhook_events_filter": ["start"]}', 422, "needs a webhook"),
    (
        "/v1/jobs",
        b'{"prompt": "a", "webhook": "http://127.0.0.1/h", "webhook_events_filter": ["done"]}',
        422,
        "webhook_events_filter.0",
    ),
    (
        "/v1/jobs",
        b'{"prompt": "a", "webhook": "http://127.0.0.1/h", "webhook_events_filter": "start"}',
        422,
        "webhook_events_filter",
    ),
    ("/v1/jobs", b'{"prompt": "a", "webhook": "http://10.1.2.3/h"}', 422, "private"),
    ("/generate", b'{"prompt": ""}', 422, "prompt"),
    ("/generate", b'{"text": "hi"}', 422, "prompt: Field required"),
    ("/generate", b"not json", 422, "not valid JSON"),
]


@pytest.mark.parametrize(("path", "body", "status", "fragment"), CASES)
def test_malformed_bodies_get_a_4xx_with_a_reason(
    stack: Stack, path: str, body: bytes, status: int, fragment: str
) -> None:
    response = httpx.post(f"{stack.api}{path}", content=body, headers=JSON)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert fragment in error["message"], error["message"]


def test_wrong_method_and_unknown_path_use_the_same_error_body(stack: Stack) -> None:
    response = httpx.get(f"{stack.api}/generate")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "method_not_allowed"
    response = httpx.get(f"{stack.api}/v2/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_a_refused_submission_leaves_no_job_behind(stack: Stack) -> None:
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    before = len(client.keys("genq:job:*"))
    httpx.post(f"{stack.api}/v1/jobs", json={"prompt": "a", "max_tokens": -1})
    assert len(client.keys("genq:job:*")) == before
    client.close()
