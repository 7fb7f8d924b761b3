"""Real HTTP webhook receivers on loopback (``http.server`` in a thread), shared by both tiers.
Each answers from a script of statuses and records what it got, verified with the Standard
Webhooks reference package."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def job(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """``answers``: statuses to answer in turn (the last one repeats); ``hang_s``: sleep this long
    before answering; ``headers``: extra response headers."""

    secret: str
    answers: list[int] = field(default_factory=lambda: [200])
    hang_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    got: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, n: int, timeout_s: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.got) >= n:
                    return list(self.got)
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.got)} of {n} webhooks arrived at {self.url}")

    def events(self) -> list[str]:
        return [r.headers.get("genq-event", "") for r in self.got]


@contextmanager
def receiver(secret: str, port: int = 0, **options) -> Iterator[Receiver]:
    state = Receiver(secret, **options)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                Webhook(state.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
            with state._lock:
                state.got.append(Received(time.time(), headers, body, verified))
                status = state.answers[min(len(state.got), len(state.answers)) - 1]
            if state.hang_s:
                time.sleep(state.hang_s)
            self.send_response(status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
