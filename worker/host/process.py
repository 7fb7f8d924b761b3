"""The engine in a process of its own: Celery's consumer takes jobs, the engine host runs them.

A worker is two processes. The one Celery runs (``genq worker``) consumes the queue and forwards
each job; the **engine host**, a child it starts, owns vLLM's ``AsyncLLM`` and everything that
runs beside it on the engine's event loop (:class:`worker.host.runtime.WorkerRuntime`: claims, the
engine, result writes, output streams, cancels, the heartbeat and the janitor). Why two: at
saturation the engine's loop keeps its process's GIL busy with vLLM's outputs, and a Celery
consumer in that process took jobs in at a fraction of its pace, so the engine's batch ran short
(measured: docs/benchmarks.md, "Two processes per worker").

They talk over a Unix socket, one JSON object per line. The Celery process sends ``run`` (a job,
whose reply ``done`` carries the status it ended in), ``metrics`` (the host's Prometheus text),
``announce`` (worker_ready: publish the worker as warm), ``shutting_down`` (SIGTERM: the grace
period starts) and ``stop``; the host first sends ``ready`` (warm, with its WorkerInfo) or
``failed`` (the engine could not start). Lifecycle:

1. ``worker_process_init`` (:mod:`worker.pool`, before the consumer connects): :func:`start`
   spawns the host and waits until it is warm. The host builds and warms the engine, exactly as
   one process did (warm-up policy, Redis connections, start-up phases).
2. ``worker_ready``: the host announces the worker and keeps its heartbeat.
3. ``worker_shutdown``: :func:`stop` tells the host to withdraw and shut the engine down.

Either side follows the other down: a host that dies unasked (its engine died: it hands its jobs
back and exits 70) takes the Celery process with it, exit code 70, for a supervisor to restart
the worker; a host whose Celery process went away hands its running jobs back and exits. The host
ignores SIGINT and SIGTERM (a terminal's Ctrl-C reaches the whole process group): the Celery
process decides when it ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, NoReturn

from prometheus_client import REGISTRY, CollectorRegistry, disable_created_metrics, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from genq.contract.schemas import WorkerInfo
from worker.clock import process_age_s
from worker.host.metrics import WorkerMetrics

log = logging.getLogger(__name__)

EXIT_ENGINE_DEAD = 70  # EX_SOFTWARE: the engine died; restart the worker
MAX_LINE = 64 << 20  # one message: a job's payload (prompts up to the model's context)


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class HostFailed(RuntimeError):
    """The engine host could not start, or its job raised (the message says what)."""


# -- the Celery process's side ------------------------------------------------------------------


class EngineHost:
    """The Celery process's handle on its engine host. Celery's consumer thread sends each job
    as its message arrives (``forward``); the job's task thread then waits for its reply
    (``execute``, matched by ``seq``), many threads at once."""

    def __init__(self, name: str):
        self.name = name
        self.info: WorkerInfo  # set by start(), from the host's "ready"
        # A Unix socket's path must fit in 108 bytes: a long TMPDIR falls back to /tmp.
        tmp = "/tmp" if len(tempfile.gettempdir()) > 60 and Path("/tmp").is_dir() else None  # noqa: S108
        self._folder = Path(tempfile.mkdtemp(prefix="genq-engine-host-", dir=tmp))
        self._path = str(self._folder / "socket")
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._seq = itertools.count()
        self._replies: dict[int, concurrent.futures.Future[Any]] = {}
        # Jobs sent to the host by forward(), by job id, until their task takes the reply.
        self._forwarded: dict[str, list[concurrent.futures.Future[Any]]] = {}
        self._forwarded_lock = threading.Lock()
        self._stopping = False
        self._process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> None:
        """Spawn the host and wait until its engine is warm (minutes on a cold GPU); raises
        :class:`HostFailed` if it cannot start."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self._path)
        listener.listen(1)
        listener.settimeout(1.0)
        # A fresh interpreter ("spawn"), not a fork of this one: the host starts vLLM's engine
        # core as a process of its own, and forking a process with threads is unsafe.
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(
            target=host_main,
            args=(self._path, self.name, process_age_s()),
            name="genq-engine-host",
            daemon=False,  # the host starts a child of its own (vLLM's engine core)
        )
        self._process.start()
        try:
            while True:
                try:
                    self._sock, _ = listener.accept()
                    break
                except TimeoutError:
                    if not self._process.is_alive():
                        raise HostFailed(
                            f"the engine host exited with code {self._process.exitcode} "
                            "before it was warm (its log says why)"
                        ) from None
        finally:
            listener.close()
        self._sock.settimeout(None)
        reader = self._sock.makefile("rb")
        first = json.loads(reader.readline() or b'{"op": "failed", "error": "no answer"}')
        if first["op"] != "ready":
            self._process.join(30)
            raise HostFailed(first.get("error", "the engine host did not start"))
        self.info = WorkerInfo.model_validate(first["info"])
        threading.Thread(
            target=self._read, args=(reader,), name="genq-engine-host-replies", daemon=True
        ).start()

    def _read(self, reader: Any) -> None:
        """Replies to their waiting threads; the host's end of the socket is its death."""
        for raw in reader:
            message = json.loads(raw)
            future = self._replies.pop(message["seq"], None)
            if future is None:
                continue
            if "error" in message:
                future.set_exception(_error(message["error"]))
            else:
                future.set_result(message["result"])
        if not self._stopping:
            self._lost()

    def _lost(self) -> NoReturn:
        """The host exited unasked: its engine died (it handed its jobs back first). Exit too,
        at once: Celery's graceful shutdown would wait forever on the jobs it held."""
        code = self._process.exitcode if self._process is not None else None
        log.critical("the engine host exited (code %s); exiting", code)
        self.remove_socket_file()
        logging.shutdown()
        os._exit(EXIT_ENGINE_DEAD)

    def _send(self, op: str, **fields: Any) -> concurrent.futures.Future[Any]:
        seq = next(self._seq)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._replies[seq] = future
        assert self._sock is not None
        with self._send_lock:
            self._sock.sendall(_line({"op": op, "seq": seq, **fields}))
        return future

    def _call(self, op: str, timeout_s: float | None = None, **fields: Any) -> Any:
        return self._send(op, **fields).result(timeout_s)

    def forward(self, payload: dict[str, Any], redelivered: bool = False) -> None:
        """Start a job on the host's engine now, from Celery's consumer thread, as its message
        arrives; its task thread takes the reply with :meth:`execute`. A task thread wakes up to
        a millisecond after the consumer hands it a job: this takes that hand-off off the job's
        path (measured: docs/benchmarks.md, "Forwarded as the message arrives")."""
        future = self._send("run", payload=payload, redelivered=redelivered)
        with self._forwarded_lock:
            self._forwarded.setdefault(payload["id"], []).append(future)

    def execute(self, payload: dict[str, Any], redelivered: bool = False) -> dict[str, str]:
        """Wait for a job's end (a Celery task thread): the job :meth:`forward` started, or,
        for one it did not, start it now."""
        with self._forwarded_lock:
            started = self._forwarded.get(payload["id"])
            future = started.pop(0) if started else None
            if started == []:
                del self._forwarded[payload["id"]]
        if future is None:
            future = self._send("run", payload=payload, redelivered=redelivered)
        return future.result()

    def announce(self) -> None:
        self._call("announce", timeout_s=30)

    def metrics(self) -> bytes:
        """The host's Prometheus text: genq's job and engine metrics, vLLM's own."""
        return self._call("metrics", timeout_s=5).encode()

    def shutting_down(self) -> None:
        self._call("shutting_down", timeout_s=5)

    def stop(self) -> None:
        """The host withdraws the worker, shuts the engine down and exits."""
        self._stopping = True
        try:
            if self._sock is not None:
                with self._send_lock:
                    self._sock.sendall(_line({"op": "stop", "seq": next(self._seq)}))
        except OSError:
            pass  # gone already
        if self._process is not None:
            self._process.join(60)
            if self._process.is_alive():
                log.warning("the engine host did not stop within 60 s; killing it")
                self._process.kill()
        if self._sock is not None:
            self._sock.close()
        self.remove_socket_file()

    def remove_socket_file(self) -> None:
        for leftover in self._folder.glob("*"):
            leftover.unlink()
        self._folder.rmdir()


def _error(error: dict[str, str]) -> Exception:
    """A job's exception, raised again in its Celery task: Redis outages keep their type, so the
    task's autoretry (genq.store.queue.RETRY_ON_REDIS_ERRORS) still sends the job back."""
    if error["type"] == "redis_connection":
        return RedisConnectionError(error["message"])
    if error["type"] == "redis_timeout":
        return RedisTimeoutError(error["message"])
    return HostFailed(error["message"])


def _error_body(exc: BaseException) -> dict[str, str]:
    kind = "other"
    if isinstance(exc, RedisTimeoutError):
        kind = "redis_timeout"
    elif isinstance(exc, RedisConnectionError):
        kind = "redis_connection"
    return {"type": kind, "message": f"{type(exc).__name__}: {exc}"}


_host: EngineHost | None = None
_startup_error: BaseException | None = None


def start(name: str) -> None:
    """Start the engine host (it reads the worker's settings from the same environment)."""
    global _host, _startup_error  # noqa: PLW0603 - one engine host per worker, by design
    host = EngineHost(name)
    try:
        host.start()
        _host = host
    except BaseException as exc:  # noqa: BLE001 - re-raised by current() in the pool
        log.error("worker start-up failed: %s", exc)
        host.remove_socket_file()
        _startup_error = exc


def current() -> EngineHost:
    if _host is None:
        raise RuntimeError("the worker's engine did not start") from _startup_error
    return _host


def shutting_down() -> None:
    """SIGTERM: the consumer stops taking jobs; running ones get ``shutdown_grace_s`` to end."""
    if _host is not None:
        _host.shutting_down()


def stop() -> None:
    global _host  # noqa: PLW0603
    if _host is not None:
        _host.stop()
        _host = None


# -- the engine host's side ---------------------------------------------------------------------


def host_main(path: str, name: str, parent_age_s: float) -> None:
    """The engine host process: start the engine, then serve the Celery process until it says
    stop (or goes away)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:  # what ps and top show (vLLM depends on setproctitle, and names its processes too)
        import setproctitle  # noqa: PLC0415

        setproctitle.setproctitle(f"[genq engine host: {name}]")
    except ImportError:
        pass
    from genq.contract.logs import configure_logging  # noqa: PLC0415 - a fresh interpreter's
    from genq.contract.settings import worker_settings  # noqa: PLC0415
    from worker.host import runtime  # noqa: PLC0415

    settings = worker_settings()
    configure_logging(settings.log_level)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    disable_created_metrics()
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    try:
        rt = runtime.WorkerRuntime.start(
            settings, name, _resend, metrics, parent_age_s=parent_age_s
        )
    except BaseException as exc:  # noqa: BLE001 - told to the Celery process, then exit
        log.exception("worker start-up failed")
        conn.sendall(_line({"op": "failed", "error": f"{type(exc).__name__}: {exc}"}))
        conn.close()
        os._exit(1)

    def exposition() -> str:
        return (generate_latest(registry) + generate_latest(REGISTRY)).decode()

    stopped = rt.engine.submit(_serve(rt, conn, exposition)).result()
    if stopped:
        rt.stop()
        logging.shutdown()
        return
    rt.die("the Celery process went away")


def _resend(payload: Any) -> None:
    from worker.celery_app import resend  # noqa: PLC0415 - the Celery app, to send with

    resend(payload)


async def _serve(rt: Any, conn: socket.socket, exposition: Any) -> bool:
    """Answer the Celery process until it says stop (True) or closes the socket (False)."""
    reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_LINE)
    loop = asyncio.get_running_loop()
    jobs: set[asyncio.Task[None]] = set()

    def reply(seq: int, result: Any = None, error: dict[str, str] | None = None) -> None:
        body = {"seq": seq, "error": error} if error else {"seq": seq, "result": result}
        writer.write(_line(body))

    async def run(seq: int, message: dict[str, Any]) -> None:
        try:
            reply(seq, await rt.run(message["payload"], message["redelivered"]))
        except Exception as exc:  # noqa: BLE001 - the job's task raises it again
            reply(seq, error=_error_body(exc))

    async def in_thread(seq: int, call: Any) -> None:
        try:
            reply(seq, await loop.run_in_executor(None, call))
        except Exception as exc:  # noqa: BLE001
            reply(seq, error=_error_body(exc))

    writer.write(_line({"op": "ready", "info": rt.info.model_dump(mode="json")}))
    while raw := await reader.readline():
        message = json.loads(raw)
        op, seq = message["op"], message["seq"]
        if op == "run":
            task = asyncio.ensure_future(run(seq, message))
        elif op == "metrics":
            task = asyncio.ensure_future(in_thread(seq, exposition))
        elif op == "announce":
            task = asyncio.ensure_future(in_thread(seq, rt.announce))
        elif op == "shutting_down":
            rt.shutting_down()
            reply(seq)
            continue
        elif op == "stop":
            writer.close()
            return True
        else:
            reply(seq, error={"type": "other", "message": f"unknown op {op!r}"})
            continue
        jobs.add(task)
        task.add_done_callback(jobs.discard)
    return False
