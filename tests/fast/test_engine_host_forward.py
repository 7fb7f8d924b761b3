"""Jobs reach the engine host as their message arrives (worker.host.process.EngineHost.forward),
and each Celery task takes its own job's reply; a job nobody forwarded is sent by its task.
The host here is a stand-in at the other end of a socket pair that echoes what it was sent."""

from __future__ import annotations

import importlib
import json
import socket
import sys
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import signals

from genq.contract.constants import TASK_GENERATE
from genq.contract.settings import worker_settings
from genq.store.embedded import EmbeddedRedis
from worker.host import process as engine_host
from worker.host.process import EngineHost


@pytest.fixture
def host() -> Iterator[tuple[EngineHost, list[dict[str, Any]]]]:
    ours, theirs = socket.socketpair()
    received: list[dict[str, Any]] = []

    def stand_in() -> None:
        for raw in theirs.makefile("rb"):
            message = json.loads(raw)
            received.append(message)
            result = {"id": message["payload"]["id"], "run": len(received)}
            theirs.sendall(json.dumps({"seq": message["seq"], "result": result}).encode() + b"\n")

    threading.Thread(target=stand_in, daemon=True).start()
    handle = EngineHost("test")
    handle._sock = ours
    handle._stopping = True  # the socket's end is the test's end, not a dead host
    threading.Thread(target=handle._read, args=(ours.makefile("rb"),), daemon=True).start()
    yield handle, received
    ours.close()
    theirs.close()
    handle.remove_socket_file()


def test_a_forwarded_job_is_sent_once_and_its_task_gets_its_reply(host: Any) -> None:
    handle, received = host
    handle.forward({"id": "a"}, redelivered=True)
    assert handle.execute({"id": "a"}, redelivered=True) == {"id": "a", "run": 1}
    assert [(m["op"], m["payload"]["id"], m["redelivered"]) for m in received] == [
        ("run", "a", True)
    ]
    assert handle._forwarded == {}


def test_a_job_not_forwarded_is_sent_by_its_task(host: Any) -> None:
    handle, received = host
    assert handle.execute({"id": "b"}) == {"id": "b", "run": 1}
    assert len(received) == 1


def test_two_deliveries_of_one_job_each_get_a_reply(host: Any) -> None:
    """A job's message delivered twice (a janitor's resend beside kombu's restore): two runs
    reach the host, which lets one of them claim the job (genq.store.jobs), and each task returns."""
    handle, received = host
    handle.forward({"id": "c"})
    handle.forward({"id": "c"})
    replies = [handle.execute({"id": "c"}), handle.execute({"id": "c"})]
    assert sorted(r["run"] for r in replies) == [1, 2]
    assert len(received) == 2
    assert handle._forwarded == {}


class _Recorder:
    def __init__(self) -> None:
        self.forwarded: list[tuple[dict[str, Any], bool]] = []

    def forward(self, payload: dict[str, Any], redelivered: bool = False) -> None:
        self.forwarded.append((payload, redelivered))


def test_the_consumer_forwards_jobs_but_not_a_retry_with_a_countdown(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """worker.celery_app's task_received handler: a generate task without an ETA goes to the
    host at once (kombu's redelivered flag with it); a retry due later, or another task, waits
    for Celery to run it."""
    # The worker's app reads its (cached) settings at import: a module of this test's own, gone
    # after it, as tests/fast/test_task_message.py does.
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    worker_settings.cache_clear()
    monkeypatch.delitem(sys.modules, "worker.celery_app", raising=False)
    celery_app = importlib.import_module("worker.celery_app")

    recorder = _Recorder()
    monkeypatch.setattr(engine_host, "current", lambda: recorder)

    def received(name: str, eta: str | None, redelivered: bool | None) -> None:
        info = {} if redelivered is None else {"redelivered": redelivered}
        request = SimpleNamespace(name=name, eta=eta, args=[{"id": "j"}], delivery_info=info)
        celery_app._forward(request=request)

    try:
        received(TASK_GENERATE, None, True)
        received(TASK_GENERATE, None, None)
        received(TASK_GENERATE, "2026-11-28T00:00:00+00:00", None)
        received("genq.something_else", None, None)
    finally:
        signals.task_received.disconnect(celery_app._forward)
        sys.modules.pop("worker.celery_app", None)
        worker_settings.cache_clear()
    assert recorder.forwarded == [({"id": "j"}, True), ({"id": "j"}, False)]
