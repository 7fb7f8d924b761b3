"""The Celery process's side of the engine host: start it, hand it each job, take the job's end.

A worker is two processes. The one Celery runs (``genq worker``, worker.celery_app) consumes the
queue and forwards each job; the **engine host** (worker.host.main), a child it starts, owns
vLLM's ``AsyncLLM`` and everything that runs beside it on the engine's event loop
(:class:`worker.host.runtime.WorkerRuntime`: claims, the engine, result writes, output streams,
cancels, the heartbeat and the janitor). Why two: at saturation the engine's loop keeps its
process's GIL busy with vLLM's outputs, and a Celery consumer in that process took jobs in at a
fraction of its pace, so the engine's batch ran short (measured: docs/performance.md, "The
engine runs in a process of its own"). They talk over a Unix socket, in the messages of
worker.protocol.

Lifecycle, driven by worker.celery_app, which owns the one :class:`EngineHost` of the worker:

1. ``worker_process_init`` (:mod:`worker.pool`, before the consumer connects):
   :meth:`EngineHost.start` spawns the host and waits until it is warm. The host builds and
   warms the engine (warm-up policy, Redis connections, start-up phases).
2. ``worker_ready``: :meth:`~EngineHost.announce`: the host publishes the worker and keeps its
   heartbeat.
3. ``worker_shutdown``: :meth:`~EngineHost.close`: the host withdraws the worker, shuts the engine
   down and exits.

Either side follows the other down: a host that dies unasked (its engine died: it hands its jobs
back and exits 70) takes the Celery process with it, exit code 70, for a supervisor to restart
the worker; a host whose Celery process went away hands its running jobs back and exits. The host
ignores SIGINT and SIGTERM (a terminal's Ctrl-C reaches the whole process group): the Celery
process decides when it ends.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import multiprocessing
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from genq.contract.schemas import JobPayload, WorkerInfo
from worker.clock import process_age_s
from worker.host.main import host_main
from worker.protocol import (
    EXIT_ENGINE_DEAD,
    MAX_MESSAGE_BYTES,
    Ack,
    Announce,
    Done,
    FromHost,
    Metrics,
    MetricsText,
    ProtocolError,
    Ready,
    RequestFailed,
    Resend,
    Run,
    ShuttingDown,
    StartFailed,
    Stop,
    ToHost,
    decode_from_host,
    encode,
    failure,
)

log = logging.getLogger(__name__)

STOP_WAIT_S = 60  # for the host to shut its engine down before it is killed


class HostFailed(RuntimeError):
    """The engine host could not start, or its job raised (the message says what)."""


class EngineHost:
    """The Celery process's handle on its engine host, from a connection on which the host has
    said :class:`~worker.protocol.Ready` (made by :meth:`start`) until :meth:`close`. Celery's
    consumer thread sends each job as its message arrives (:meth:`forward`); the job's task
    thread then waits for its reply (:meth:`execute`, matched by ``seq``), many threads at once.
    A reader thread hands each reply to its waiting thread; the host's end of the connection,
    unless :meth:`close` asked for it, ends this process (:data:`EXIT_ENGINE_DEAD`). The host's
    own requests, jobs its janitor sends again, go to ``resend`` (the Celery app's sender)."""

    def __init__(
        self,
        conn: socket.socket,
        resend: Callable[[JobPayload], None],
        process: multiprocessing.process.BaseProcess | None = None,
        folder: Path | None = None,
    ):
        """Take over ``conn``, the connection to a host that ``process`` runs (None: whatever is
        at the other end); ``folder`` holds its socket file, removed on close. Waits for the
        host's first message: raises :class:`HostFailed` unless it says Ready."""
        self._sock = conn
        self._resend = resend
        self._process = process
        self._folder = folder
        self._send_lock = threading.Lock()
        self._seq = itertools.count()
        self._replies: dict[int, concurrent.futures.Future[Any]] = {}
        # Jobs sent to the host by forward(), by job id, until their task takes the reply.
        self._forwarded: dict[str, list[concurrent.futures.Future[Any]]] = {}
        self._forwarded_lock = threading.Lock()
        self._closing = False
        reader = conn.makefile("rb")
        try:
            self.info = _first_message(reader)
        except BaseException:
            reader.close()
            raise
        threading.Thread(
            target=self._read, args=(reader,), name="genq-engine-host-replies", daemon=True
        ).start()

    @classmethod
    def start(cls, name: str, resend: Callable[[JobPayload], None]) -> EngineHost:
        """Spawn the host and wait until its engine is warm (minutes on a cold GPU); raises
        :class:`HostFailed` if it cannot start. The host reads the worker's settings from the
        same environment."""
        folder = _socket_folder()
        try:
            process, conn = _spawn(str(folder / "socket"), name)
            try:
                return cls(conn, resend, process, folder)
            except BaseException:
                conn.close()
                process.join(30)  # it exits once it has said why
                raise
        except BaseException:
            _remove(folder)
            raise

    # -- jobs ---------------------------------------------------------------------------------

    def forward(self, payload: dict[str, Any], redelivered: bool = False) -> None:
        """Start a job on the host's engine now, from Celery's consumer thread, as its message
        arrives; its task thread takes the reply with :meth:`execute`. A task thread wakes up to
        a millisecond after the consumer hands it a job: this takes that hand-off off the job's
        path (measured: docs/performance.md, "A job's path: fewer round trips, forwarded as its
        message arrives")."""
        seq = next(self._seq)
        future = self._send(seq, Run(seq, payload, redelivered))
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
            seq = next(self._seq)
            future = self._send(seq, Run(seq, payload, redelivered))
        return future.result()

    # -- the worker's lifecycle ---------------------------------------------------------------

    def announce(self) -> None:
        """worker_ready: the host publishes the worker as warm and starts its heartbeat."""
        self._call(Announce, timeout_s=30)

    def metrics(self) -> bytes:
        """The host's Prometheus text: genq's job and engine metrics, vLLM's own."""
        return self._call(Metrics, timeout_s=5).encode()

    def shutting_down(self) -> None:
        """SIGTERM: the consumer stops taking jobs; running ones get ``shutdown_grace_s`` to
        end."""
        self._call(ShuttingDown, timeout_s=5)

    def close(self) -> None:
        """The host withdraws the worker, shuts the engine down and exits (or is killed, after
        :data:`STOP_WAIT_S`)."""
        self._closing = True
        try:
            with self._send_lock:
                self._sock.sendall(encode(Stop()))
        except OSError:
            pass  # gone already
        if self._process is not None:
            self._process.join(STOP_WAIT_S)
            if self._process.is_alive():
                log.warning("the engine host did not stop within %d s; killing it", STOP_WAIT_S)
                self._process.kill()
        self._sock.close()
        if self._folder is not None:
            _remove(self._folder)

    # -- the connection -----------------------------------------------------------------------

    def _send(self, seq: int, message: ToHost) -> concurrent.futures.Future[Any]:
        """Send a request; its reply, when the reader thread has it, completes the future. Raises
        :class:`ProtocolError` for a message over the limit, which is then not sent."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._replies[seq] = future
        try:
            with self._send_lock:  # the one encoder, and whole lines on the socket
                self._sock.sendall(encode(message))
        except BaseException:
            del self._replies[seq]
            raise
        return future

    def _call(self, kind: type[Metrics | Announce | ShuttingDown], timeout_s: float) -> Any:
        seq = next(self._seq)
        return self._send(seq, kind(seq)).result(timeout_s)

    def _read(self, reader: BinaryIO) -> None:
        """Replies to their waiting threads; the host's end of the connection is its death."""
        try:
            # The limit, plus one byte to tell a line over it, plus its newline.
            while line := reader.readline(MAX_MESSAGE_BYTES + 2):
                self._reply(decode_from_host(line))
        except (ProtocolError, OSError) as exc:
            if not self._closing:
                log.critical("lost the engine host's connection: %s", exc)
        finally:
            reader.close()  # a socket stays open while a file made from it is
        if not self._closing:
            self._lost()

    def _reply(self, message: FromHost) -> None:
        if isinstance(message, Resend):
            # Sent from a thread of its own: a send may wait on the broker, replies may not.
            threading.Thread(
                target=self._send_again, args=(message,), name="genq-resend", daemon=True
            ).start()
            return
        if isinstance(message, (Ready, StartFailed)):
            raise ProtocolError(f"a {type(message).__name__} message after start-up")
        future = self._replies.pop(message.seq, None)
        if future is None:
            return  # not a request of this handle's
        if isinstance(message, Done):
            future.set_result(message.result)
        elif isinstance(message, MetricsText):
            future.set_result(message.text)
        elif isinstance(message, Ack):
            future.set_result(None)
        else:
            future.set_exception(_exception(message))

    def _send_again(self, request: Resend) -> None:
        try:
            self._resend(JobPayload.model_validate_json(bytes(request.payload)))
        except Exception as exc:  # noqa: BLE001 - raised again in the host's janitor, which logs it
            reply: Ack | RequestFailed = failure(request.seq, exc)
        else:
            reply = Ack(request.seq)
        try:
            with self._send_lock:
                self._sock.sendall(encode(reply))
        except OSError:
            pass  # the host is gone: the reader thread ends this process

    def _lost(self) -> NoReturn:
        """The host exited unasked: its engine died (it handed its jobs back first). Exit too,
        at once: Celery's graceful shutdown would wait forever on the jobs it held."""
        code = self._process.exitcode if self._process is not None else None
        log.critical("the engine host exited (code %s); exiting", code)
        if self._folder is not None:
            _remove(self._folder)
        logging.shutdown()
        os._exit(EXIT_ENGINE_DEAD)


def _exception(failed: RequestFailed) -> Exception:
    """A job's exception, raised again in its Celery task: Redis outages keep their type, so the
    task's autoretry (genq.store.queue.RETRY_ON_REDIS_ERRORS) still sends the job back."""
    if failed.kind == "redis_connection":
        return RedisConnectionError(failed.message)
    if failed.kind == "redis_timeout":
        return RedisTimeoutError(failed.message)
    return HostFailed(failed.message)


def _first_message(reader: BinaryIO) -> WorkerInfo:
    """The host's first word: Ready, with its WorkerInfo; else :class:`HostFailed`."""
    line = reader.readline(MAX_MESSAGE_BYTES + 2)
    if not line:
        raise HostFailed(
            "the engine host closed its connection before it was warm (its log says why)"
        )
    try:
        first = decode_from_host(line)
    except ProtocolError as exc:
        raise HostFailed(f"the engine host's first message: {exc}") from None
    if isinstance(first, StartFailed):
        raise HostFailed(first.error)
    if not isinstance(first, Ready):
        raise HostFailed(f"the engine host's first message was {type(first).__name__}, not Ready")
    return WorkerInfo.model_validate_json(bytes(first.info))


def _socket_folder() -> Path:
    # A Unix socket's path must fit in 108 bytes: a long TMPDIR falls back to /tmp.
    short = "/tmp"  # noqa: S108 - a folder of its own, made by mkdtemp
    tmp = short if len(tempfile.gettempdir()) > 60 and Path(short).is_dir() else None
    return Path(tempfile.mkdtemp(prefix="genq-engine-host-", dir=tmp))


def _remove(folder: Path) -> None:
    for leftover in folder.glob("*"):
        leftover.unlink()
    folder.rmdir()


def _spawn(path: str, name: str) -> tuple[multiprocessing.process.BaseProcess, socket.socket]:
    """Start the host process and take its connection to ``path``; raises :class:`HostFailed`
    if it exits first."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(1.0)
    # A fresh interpreter ("spawn"), not a fork of this one: the host starts vLLM's engine core
    # as a process of its own, and forking a process with threads is unsafe.
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=host_main,
        args=(path, name, process_age_s()),
        name="genq-engine-host",
        daemon=False,  # the host starts a child of its own (vLLM's engine core)
    )
    process.start()
    try:
        while True:
            try:
                conn, _ = listener.accept()
                break
            except TimeoutError:
                if not process.is_alive():
                    raise HostFailed(
                        f"the engine host exited with code {process.exitcode} "
                        "before it was warm (its log says why)"
                    ) from None
    finally:
        listener.close()
    conn.settimeout(None)
    return process, conn
