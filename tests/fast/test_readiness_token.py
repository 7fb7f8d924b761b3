"""`genq up` says "ready" only when its own API says so: the API it starts gets a fresh instance
token (``GENQ_INSTANCE_TOKEN``) and answers ``/readyz`` with it (api.routes.health), and another
program on the port, answering ``/readyz`` 200 without it, does not pass for genq
(genq.cli.up.ready_workers)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes import health
from genq.cli import up
from genq.contract.settings import ApiSettings
from genq.store.embedded import EmbeddedRedis

TOKEN = "this-up-s-token"


class _Impostor(BaseHTTPRequestHandler):
    """Answers as a ready genq would, with whatever instance token the test gives it (or none)."""

    token: str | None = None

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/readyz":
            body = {"status": "ready", "redis": "ok", "warm_workers": 1}
        elif self.path == "/v1/workers":
            body = {"workers": [{"name": "w", "ready_at": time.time(), "startup_s": {}}]}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        if self.token is not None:
            self.send_header(up.INSTANCE_HEADER, self.token)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[tuple[str, type[_Impostor]]]:
    handler = type("Handler", (_Impostor,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_another_server_answering_readyz_200_is_not_ready(
    impostor: tuple[str, type[_Impostor]],
) -> None:
    url, handler = impostor
    assert up.ready_workers(url, TOKEN, since=0.0) is None  # no token at all
    handler.token = "another-instance"
    assert up.ready_workers(url, TOKEN, since=0.0) is None
    handler.token = TOKEN  # the same server, answering as genq's own API would
    (worker,) = up.ready_workers(url, TOKEN, since=0.0) or []
    assert worker["name"] == "w"


def test_the_api_answers_readyz_with_the_token_it_was_started_with(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = ApiSettings(redis_url=redis_server.url, api_keys_file=tmp_path / "absent.json")
    monkeypatch.setenv(up.INSTANCE_TOKEN_ENV, TOKEN)
    with TestClient(create_app(settings)) as client:
        answer = client.get("/readyz")
    # No worker here: not ready, and still its own answer, which says whose it is.
    assert answer.status_code == 503
    assert answer.headers[up.INSTANCE_HEADER] == TOKEN
    monkeypatch.delenv(up.INSTANCE_TOKEN_ENV)
    with TestClient(create_app(settings)) as client:  # an API started by anything else
        assert up.INSTANCE_HEADER not in client.get("/readyz").headers


def test_up_and_the_api_name_the_token_alike() -> None:
    assert (up.INSTANCE_TOKEN_ENV, up.INSTANCE_HEADER) == (
        health.INSTANCE_TOKEN_ENV,
        health.INSTANCE_HEADER,
    )
