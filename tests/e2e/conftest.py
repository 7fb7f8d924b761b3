"""The real stack for end-to-end tests: a real Redis, the real API (uvicorn, its own process),
and one real worker with the real vLLM CPU engine and the default model.

The engine costs ~30 s to start, so the stack is session-scoped. Before the worker starts, the
fixture records what a user would see with no warm worker (``/readyz``) and submits one job,
which must then run once the worker is warm.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from genq.contract.constants import model_queue
from genq.contract.webhooks import new_secret
from genq.store.embedded import EmbeddedRedis, free_port
from tests.conftest import MODEL_QUEUE
from worker.model_files import DEFAULT_MODEL_NAME

WORKER_READY_TIMEOUT_S = 300


@dataclass
class Stack:
    api: str
    redis_url: str
    worker_name: str
    logs: Path
    env: dict[str, str]
    redis_server: EmbeddedRedis
    early_job_id: str = ""
    readyz_before_worker: httpx.Response | None = None
    worker: subprocess.Popen[bytes] | None = None
    first_worker: dict | None = None  # the session's first worker, as it announced itself
    webhook_secret: str = ""
    worker_http: str = ""  # the worker's own endpoint: /healthz, /readyz, /metrics
    # (unix time, status) of each answer of the worker's /readyz while it started
    readyz_while_starting: list[tuple[float, int]] = field(default_factory=list)

    def start_worker(self, name: str | None = None) -> None:
        """Start a worker (under a new name, if given) and wait until it is warm, asking its
        own /readyz all along."""
        if name is not None:
            self.worker_name = name
        port = free_port()
        self.worker_http = f"http://127.0.0.1:{port}"
        env = self.env | {"GENQ_WORKER_NAME": self.worker_name, "GENQ_WORKER_HTTP_PORT": str(port)}
        self.worker = start_role("worker", env, self.logs / f"{self.worker_name}.log")
        self.readyz_while_starting = []

        def warm() -> bool:
            try:
                status = httpx.get(f"{self.worker_http}/readyz").status_code
                self.readyz_while_starting.append((time.time(), status))
            except httpx.HTTPError:
                pass  # not listening yet
            workers = httpx.get(f"{self.api}/v1/workers").json()["workers"]
            return any(w["name"] == self.worker_name for w in workers)

        wait_until(warm, WORKER_READY_TIMEOUT_S, f"worker warm (logs: {self.logs})", self.worker)

    def worker_info(self) -> dict:
        workers = httpx.get(f"{self.api}/v1/workers").json()["workers"]
        (info,) = [w for w in workers if w["name"] == self.worker_name]
        return info


def start_role(role: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "genq.cli.main", role],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextlib.contextmanager
def another_api(
    stack: Stack, log: Path, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A second API process on the stack's Redis, with ``env`` on top of the stack's: its URL
    and process once it answers, stopped after."""
    port = free_port()
    api = start_role("api", stack.env | env | {"GENQ_API_PORT": str(port)}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 30, log.name, api)
        yield url, api
    finally:
        stop_role(api)


class UpOutput:
    """What a `genq up` started with its stdout piped prints, read line by line as it comes (a
    thread of its own), for a test to wait on and to read back."""

    def __init__(self, up: subprocess.Popen) -> None:
        assert up.stdout is not None
        self.up = up
        self.seen: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(
            target=lambda: [self._lines.put(line) for line in up.stdout], daemon=True
        )
        self._reader.start()

    def read_until(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """The first line after those seen that matches ``pattern`` (a regular expression);
        fails if `genq up` exits or ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=1)
            except queue.Empty:
                assert self.up.poll() is None, "genq up exited:\n" + "".join(self.seen)
                continue
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no {pattern!r} in {timeout_s} s:\n" + "".join(self.seen[-60:]))

    def close(self) -> None:
        """Once `genq up` has exited: the rest of what it printed joins ``seen``."""
        self._reader.join(10)  # EOF once every process that shared the pipe has exited
        self.up.stdout.close()
        while not self._lines.empty():
            self.seen.append(self._lines.get())


def kill_up(up: subprocess.Popen) -> None:
    """After a failed run of `genq up`: each role has a process group of its own, so every
    process under it is killed one by one, then its own group."""
    import psutil  # noqa: PLC0415 - the few tests that start `genq up` need it

    for child in psutil.Process(up.pid).children(recursive=True):
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    os.killpg(up.pid, signal.SIGKILL)
    up.wait()


def stop_role(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


def wait_until(check, timeout_s: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        try:
            if result := check():
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{what}: not within {timeout_s} s")


@pytest.fixture(scope="session")
def stack(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("logs")
    port = free_port()
    worker_name = f"genq-test-{os.getpid()}@localhost"
    secret = new_secret()
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "GENQ_API_PORT": str(port),
        "GENQ_WORKER_NAME": worker_name,
        "GENQ_WORKER_CONCURRENCY": "32",
        "GENQ_HEARTBEAT_S": "1",
        "GENQ_SHUTDOWN_GRACE_S": "10",
        # Webhooks: receivers on loopback, retries in seconds, a 1 s timeout.
        "GENQ_WEBHOOK_SECRET": secret,
        "GENQ_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "GENQ_WEBHOOK_RETRY_SCHEDULE_S": "[1, 1, 1]",
        "GENQ_WEBHOOK_TIMEOUT_S": "1",
        "GENQ_WEBHOOK_POLL_S": "0.1",
    }
    api_url = f"http://127.0.0.1:{port}"
    api = start_role("api", env, logs / "api.log")
    webhooks = start_role("webhooks", env, logs / "webhooks.log")
    stack = Stack(api_url, redis_server.url, worker_name, logs, env, redis_server)
    stack.webhook_secret = secret
    try:
        wait_until(lambda: httpx.get(f"{api_url}/healthz").status_code == 200, 30, "API start", api)
        stack.readyz_before_worker = httpx.get(f"{api_url}/readyz")
        early = httpx.post(
            f"{api_url}/v1/jobs",
            json={"prompt": "Queued before any worker was warm.", "max_tokens": 8},
        )
        assert early.status_code == 202, early.text
        stack.early_job_id = early.json()["id"]
        stack.start_worker()
        stack.first_worker = stack.worker_info()
        yield stack
    finally:
        if stack.worker is not None:
            stop_role(stack.worker)
        stop_role(webhooks)
        stop_role(api)


_replacements = itertools.count(1)


@pytest.fixture(autouse=True)
def _a_worker_for_the_next_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that stop the stack's worker start the next one themselves; one that fails in
    between would leave every later test without a worker (in one CI run, a single failure
    became 22). After such a test, a fresh worker is started here, under a name of its own: the
    dead one's may still be listed until its heartbeat lapses."""
    yield
    if "stack" not in request.fixturenames:
        return
    stack: Stack = request.getfixturevalue("stack")
    if stack.worker is None or stack.worker.poll() is None:
        return
    stack.start_worker(name=f"genq-test-restored-{next(_replacements)}-{os.getpid()}@localhost")


@dataclass
class ParkedApi:
    """A second API on the same Redis whose jobs go to a queue no worker consumes, until a test
    moves them to the real one: jobs that stay queued for as long as a test needs."""

    url: str
    queue: str
    redis_url: str

    def release(self) -> int:
        """Move every parked message to the workers' queue; returns how many."""
        client = redis.Redis.from_url(self.redis_url)
        moved = 0
        while client.rpoplpush(self.queue, MODEL_QUEUE) is not None:
            moved += 1
        client.close()
        return moved


@pytest.fixture(scope="module")
def parked_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParkedApi]:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": stack.redis_url,
        "GENQ_API_PORT": str(port),
        "GENQ_QUEUE": "genq.parked",
        "GENQ_MAX_QUEUED": "5",
    }
    api = start_role("api", env, tmp_path_factory.mktemp("parked") / "api.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 30, "parked API", api)
        yield ParkedApi(url, model_queue("genq.parked", DEFAULT_MODEL_NAME), stack.redis_url)
    finally:
        stop_role(api)


def wait_for_job(api: str, job_id: str, timeout_s: float = 120) -> dict:
    def terminal() -> dict | None:
        response = httpx.get(f"{api}/v1/jobs/{job_id}")
        if response.status_code != 200:  # e.g. 503 while Redis restarts
            return None
        job = response.json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_until(terminal, timeout_s, f"job {job_id} finished")
