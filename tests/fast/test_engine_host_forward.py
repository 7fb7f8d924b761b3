"""Jobs reach the engine host as their message arrives (worker.engine_client.EngineHost.forward),
and each Celery task takes its own job's reply; a job nobody forwarded is sent by its task.
The host here is a stand-in at the other end of a socket pair that speaks worker.protocol: it
says Ready, then answers each job with what it was sent. Last, both sides for real over one
socket pair (worker.host.main's EngineHostServer with a runtime of no engine)."""

from __future__ import annotations

import asyncio
import importlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from celery import signals
from redis.exceptions import ConnectionError as RedisConnectionError

from genq.contract.constants import TASK_GENERATE
from genq.contract.schemas import JobInput, JobPayload, WorkerInfo
from genq.contract.settings import WorkerSettings, worker_settings
from genq.store.embedded import EmbeddedRedis
from worker import engine_client
from worker.engine_client import EngineHost, HostFailed
from worker.host.main import EngineHostServer
from worker.host.runtime import WorkerRuntime
from worker.protocol import (
    EXIT_ENGINE_DEAD,
    Ack,
    Announce,
    Done,
    Metrics,
    MetricsText,
    Ready,
    RequestFailed,
    Resend,
    Run,
    StartFailed,
    Stop,
    decode_to_host,
    encode,
)

INFO = WorkerInfo(
    name="test", model="m", concurrency=2, ready_at=1.0, startup_s={"total": 2.5}, heartbeat_at=1.0
)


def _no_resend(payload: JobPayload) -> None:
    raise AssertionError(f"nothing here resends, yet {payload.id} was")


def _stand_in(theirs: socket.socket, received: list[Any]) -> None:
    """Ready, then a Done for each Run (its job id and how many runs came so far), the answer
    to Metrics and Announce; it hangs up on Stop."""
    theirs.sendall(encode(Ready(msgspec.Raw(INFO.model_dump_json().encode()))))
    for line in theirs.makefile("rb"):
        message = decode_to_host(line)
        received.append(message)
        if isinstance(message, Run):
            result = {"id": message.payload["id"], "run": str(len(received))}
            theirs.sendall(encode(Done(message.seq, result)))
        elif isinstance(message, Metrics):
            theirs.sendall(encode(MetricsText(message.seq, "genq_jobs_total 3\n")))
        elif isinstance(message, Announce):
            theirs.sendall(encode(Ack(message.seq)))
        elif isinstance(message, Stop):
            break
    theirs.close()


@pytest.fixture
def host() -> Iterator[tuple[EngineHost, list[Any]]]:
    ours, theirs = socket.socketpair()
    received: list[Any] = []
    stand_in = threading.Thread(target=_stand_in, args=(theirs, received), daemon=True)
    stand_in.start()
    handle = EngineHost(ours, _no_resend)
    yield handle, received
    handle.close()
    stand_in.join(5)
    assert isinstance(received[-1], Stop)


def test_the_host_says_ready_with_its_worker_info(host: Any) -> None:
    handle, _ = host
    assert handle.info == INFO
    handle.announce()
    assert handle.metrics() == b"genq_jobs_total 3\n"


def test_a_forwarded_job_is_sent_once_and_its_task_gets_its_reply(host: Any) -> None:
    handle, received = host
    handle.forward({"id": "a"}, redelivered=True)
    assert handle.execute({"id": "a"}, redelivered=True) == {"id": "a", "run": "1"}
    assert [(type(m), m.payload["id"], m.redelivered) for m in received] == [(Run, "a", True)]
    assert handle._forwarded == {}


def test_a_job_not_forwarded_is_sent_by_its_task(host: Any) -> None:
    handle, received = host
    assert handle.execute({"id": "b"}) == {"id": "b", "run": "1"}
    assert len(received) == 1


def test_two_deliveries_of_one_job_each_get_a_reply(host: Any) -> None:
    """A job's message delivered twice (a janitor's resend beside kombu's restore): two runs
    reach the host, which lets one of them claim the job (genq.store.jobs), and each task
    returns."""
    handle, received = host
    handle.forward({"id": "c"})
    handle.forward({"id": "c"})
    replies = [handle.execute({"id": "c"}), handle.execute({"id": "c"})]
    assert sorted(r["run"] for r in replies) == ["1", "2"]
    assert len(received) == 2
    assert handle._forwarded == {}


def test_a_host_that_could_not_start_says_why() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(encode(StartFailed("EngineFailed: out of memory")))
    with pytest.raises(HostFailed, match="EngineFailed: out of memory"):
        EngineHost(ours, _no_resend)
    theirs.close()
    with pytest.raises(HostFailed, match="closed its connection before it was warm"):
        EngineHost(ours, _no_resend)
    ours.close()


def test_a_host_gone_unasked_ends_the_celery_process_with_code_70(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its engine died: Celery's graceful shutdown would wait forever on the jobs it held."""
    exited = threading.Event()
    codes: list[int] = []

    def exit_(code: int) -> None:  # returns: the reader thread then ends
        codes.append(code)
        exited.set()

    monkeypatch.setattr(engine_client.os, "_exit", exit_)
    monkeypatch.setattr(engine_client.logging, "shutdown", lambda: None)  # pytest's handlers
    ours, theirs = socket.socketpair()
    theirs.sendall(encode(Ready(msgspec.Raw(INFO.model_dump_json().encode()))))
    EngineHost(ours, _no_resend)
    theirs.close()
    assert exited.wait(5)
    assert codes == [EXIT_ENGINE_DEAD]
    ours.close()


def _job(job_id: str) -> JobPayload:
    job = JobInput.model_validate({"prompt": "hi", "sampling": {"max_tokens": 4}})
    return JobPayload(id=job_id, input=job, created_at=time.time(), model="other")


def test_a_resend_the_host_asks_for_is_sent_and_answered() -> None:
    """The host's janitor has no Celery app: the Celery process sends the job again, from a
    thread of its own, and answers Ack, or RequestFailed when the send raised."""
    sent: list[JobPayload] = []

    def resend(payload: JobPayload) -> None:
        if payload.id == "down":
            raise RedisConnectionError("Connection refused")
        sent.append(payload)

    ours, theirs = socket.socketpair()
    theirs.sendall(encode(Ready(msgspec.Raw(INFO.model_dump_json().encode()))))
    handle = EngineHost(ours, resend)
    replies = theirs.makefile("rb")
    answers = []
    for seq, job_id in enumerate(["lost", "down"]):
        theirs.sendall(encode(Resend(seq, msgspec.Raw(_job(job_id).model_dump_json().encode()))))
        answers.append(decode_to_host(replies.readline()))
    assert [p.id for p in sent] == ["lost"] and sent[0].model == "other"
    assert answers == [
        Ack(0),
        RequestFailed(1, "redis_connection", "ConnectionError: Connection refused"),
    ]
    handle.close()
    theirs.close()


class _Engine:
    """An event loop on a thread of its own, as worker.host.engine.Engine runs vLLM's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self.loop.run_forever()
        self.loop.close()

    def submit(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


class _Runtime:
    """worker.host.runtime.WorkerRuntime's face to the server, without an engine."""

    info = INFO

    def __init__(self) -> None:
        self.engine = _Engine()
        self.calls: list[str] = []

    async def run(self, payload: dict[str, Any], redelivered: bool) -> dict[str, str]:
        if payload.get("redis_down"):
            raise RedisConnectionError("Connection refused")
        return {"id": payload["id"], "status": "succeeded" if not redelivered else "skipped"}

    def announce(self) -> None:
        self.calls.append("announce")

    def shutting_down(self) -> None:
        self.calls.append("shutting_down")

    def stop(self) -> None:
        self.calls.append("stop")
        self.engine.loop.call_soon_threadsafe(self.engine.loop.stop)


def test_both_sides_over_one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = _Runtime()
    monkeypatch.setattr(WorkerRuntime, "start", lambda *_, **__: runtime)
    sent: list[JobPayload] = []
    ours, theirs = socket.socketpair()
    with (
        EngineHostServer(theirs, WorkerSettings(), "test") as server,
        ThreadPoolExecutor(1) as pool,
    ):
        serving = pool.submit(lambda: (server.start(0.0), server.serve())[1])
        handle = EngineHost(ours, sent.append)
        try:
            assert handle.info == INFO

            handle.forward({"id": "a"}, redelivered=True)
            assert handle.execute({"id": "a"}, True) == {"id": "a", "status": "skipped"}
            assert handle.execute({"id": "b"}) == {"id": "b", "status": "succeeded"}
            with pytest.raises(RedisConnectionError, match="Connection refused"):
                handle.execute({"id": "c", "redis_down": True})
            handle.announce()
            handle.shutting_down()
            assert runtime.calls == ["announce", "shutting_down"]
            assert b"# TYPE genq_jobs_total counter" in handle.metrics()

            server.resend(_job("lost"))  # as the janitor calls it: from a thread; it waits
            assert [p.id for p in sent] == ["lost"]

            def down(payload: JobPayload) -> None:
                raise RedisConnectionError("Connection refused")

            handle._resend = down
            with pytest.raises(RuntimeError, match="could not send the job again: Connection"):
                server.resend(_job("again"))
        finally:
            handle.close()
        assert serving.result(5) is None  # told to stop: not the Celery process gone
    assert runtime.calls[-1] == "stop"


class _Recorder:
    def __init__(self) -> None:
        self.forwarded: list[tuple[dict[str, Any], bool]] = []

    def host(self) -> _Recorder:
        return self

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
    monkeypatch.setattr(celery_app, "engine", recorder)

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
