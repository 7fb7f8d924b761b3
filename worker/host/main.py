"""The engine host: the process a worker's Celery process starts (worker.engine_client) to own its
engine, and everything that runs beside it on the engine's loop (worker.host.runtime).

:func:`host_main` is the process: it connects to the Celery process's socket, builds and warms
the engine, says :class:`~worker.protocol.Ready` (or :class:`~worker.protocol.StartFailed`), then
answers the Celery process's requests (worker.protocol) until it says Stop, or goes away. Its
state lives in one :class:`EngineHostServer`, which ``host_main`` opens and closes.

This package runs without Celery: no celery, kombu or worker.celery_app here, not even through
another module. A job the janitor sends again goes back on its queue through the Celery process
(:class:`~worker.protocol.Resend`), which has the Celery app to send it with.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec
from prometheus_client import REGISTRY, CollectorRegistry, disable_created_metrics, generate_latest

from worker.host import vllm_log
from worker.host.metrics import WorkerMetrics
from worker.protocol import (
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
    decode_to_host,
    encode,
    failure,
)

if TYPE_CHECKING:
    from genq.contract.schemas import JobPayload
    from genq.contract.settings import WorkerSettings
    from worker.host.runtime import WorkerRuntime

log = logging.getLogger(__name__)

RESEND_TIMEOUT_S = 30  # for the Celery process to put a job back on its queue


class EngineHostServer:
    """The engine host's state: the connection to the Celery process, the runtime (the engine
    and all beside it), the metrics registry the runtime feeds, and the janitor's resends that
    wait for the Celery process. :func:`host_main` opens it and closes it (a context manager);
    closing stops the runtime and its engine."""

    def __init__(self, conn: socket.socket, settings: WorkerSettings, name: str):
        self.settings = settings
        self.name = name
        self._conn = conn
        disable_created_metrics()  # no *_created series: noise on every counter and histogram
        self.registry = CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        self.runtime: WorkerRuntime | None = None
        self._writer: asyncio.StreamWriter | None = None  # the connection, once serving
        self._resend_seq = itertools.count()
        self._resends: dict[int, concurrent.futures.Future[None]] = {}

    def __enter__(self) -> EngineHostServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, parent_age_s: float) -> None:
        """Build and warm the engine, then tell the Celery process: Ready, or StartFailed (and
        raise) if it could not start. ``parent_age_s``: the Celery process's age when it spawned
        this one (part of the worker's start-up)."""
        from worker.host.runtime import WorkerRuntime  # noqa: PLC0415 - the engine's imports

        try:
            self.runtime = WorkerRuntime.start(
                self.settings, self.name, self.resend, self.metrics, parent_age_s=parent_age_s
            )
        except BaseException as exc:
            log.exception("worker start-up failed")
            self._conn.sendall(encode(StartFailed(f"{type(exc).__name__}: {exc}")))
            raise
        info = msgspec.Raw(self.runtime.info.model_dump_json().encode())
        self._conn.sendall(encode(Ready(info)))

    def serve(self) -> str | None:
        """Answer the Celery process until it says Stop (None), or until it goes away or sends
        what is not a message (the reason, for :meth:`die`)."""
        assert self.runtime is not None
        return self.runtime.engine.submit(self._serve(self.runtime)).result()

    def die(self, why: str) -> NoReturn:
        """Hand the running jobs back and exit (worker.host.runtime.WorkerRuntime.die)."""
        assert self.runtime is not None
        self.runtime.die(why)

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None
        self._conn.close()

    def exposition(self) -> str:
        """Prometheus text: genq's job and engine metrics, then this process's default registry
        (``process_*``, ``python_*`` and vLLM's own ``vllm:*``)."""
        return (generate_latest(self.registry) + generate_latest(REGISTRY)).decode()

    def resend(self, payload: JobPayload) -> None:
        """The janitor's (worker.host.runtime, from a thread): put a job whose worker died back
        on its model's queue. The Celery process sends it, with its Celery app; this waits until
        it has, and raises if it could not."""
        assert self.runtime is not None
        seq = next(self._resend_seq)
        sent: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._resends[seq] = sent
        message = Resend(seq, msgspec.Raw(payload.model_dump_json().encode()))
        self.runtime.engine.loop.call_soon_threadsafe(self._write, message)
        try:
            sent.result(RESEND_TIMEOUT_S)
        finally:
            del self._resends[seq]

    def _write(self, message: FromHost) -> None:
        """On the engine loop, which owns the connection (and the encoder)."""
        assert self._writer is not None
        self._writer.write(encode(message))

    def _resent(self, reply: Ack | RequestFailed) -> None:
        sent = self._resends.get(reply.seq)
        if sent is None:
            return  # its resend stopped waiting
        if isinstance(reply, Ack):
            sent.set_result(None)
        else:
            sent.set_exception(
                RuntimeError(f"the Celery process could not send the job again: {reply.message}")
            )

    async def _serve(self, rt: WorkerRuntime) -> str | None:
        reader, writer = await asyncio.open_unix_connection(
            sock=self._conn, limit=MAX_MESSAGE_BYTES
        )
        self._writer = writer
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()

        async def run(message: Run) -> None:
            try:
                result = await rt.run(message.payload, message.redelivered)
            except Exception as exc:  # noqa: BLE001 - the job's task raises it again
                writer.write(encode(failure(message.seq, exc)))
            else:
                writer.write(encode(Done(message.seq, result)))

        async def in_thread(
            seq: int, call: Callable[[], Any], reply: Callable[[int, Any], FromHost]
        ) -> None:
            try:
                value = await loop.run_in_executor(None, call)
            except Exception as exc:  # noqa: BLE001 - raised again in the Celery process
                writer.write(encode(failure(seq, exc)))
            else:
                writer.write(encode(reply(seq, value)))

        while True:
            try:
                line = await reader.readline()
            except ValueError:  # asyncio's word for a line over the limit
                return f"a message from the Celery process over {MAX_MESSAGE_BYTES} bytes"
            if not line:
                return "the Celery process went away"
            try:
                message = decode_to_host(line)
            except ProtocolError as exc:
                return str(exc)
            if isinstance(message, Run):
                task = asyncio.ensure_future(run(message))
            elif isinstance(message, Metrics):
                task = asyncio.ensure_future(in_thread(message.seq, self.exposition, MetricsText))
            elif isinstance(message, Announce):
                task = asyncio.ensure_future(
                    in_thread(message.seq, rt.announce, lambda seq, _: Ack(seq))
                )
            elif isinstance(message, (Ack, RequestFailed)):
                self._resent(message)
                continue
            elif isinstance(message, ShuttingDown):
                rt.shutting_down()
                writer.write(encode(Ack(message.seq)))
                continue
            else:
                assert isinstance(message, Stop)
                writer.close()
                return None
            tasks.add(task)
            task.add_done_callback(tasks.discard)


def host_main(path: str, name: str, parent_age_s: float) -> None:
    """The engine host process: connect to the Celery process at ``path``, start the engine,
    then serve until told to stop (or until the Celery process goes away: then hand the running
    jobs back and exit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:  # what ps and top show (vLLM depends on setproctitle, and names its processes too)
        import setproctitle  # noqa: PLC0415

        setproctitle.setproctitle(f"[genq engine host: {name}]")
    except ImportError:
        pass
    # A fresh interpreter's imports.
    from genq.contract.logs import configure_logging, verbose  # noqa: PLC0415
    from genq.contract.settings import worker_settings  # noqa: PLC0415

    settings = worker_settings()
    configure_logging(settings.log_level)
    vllm_log.quiet_console(verbose(settings.log_level))  # before the engine's imports
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    with EngineHostServer(conn, settings, name) as server:
        try:
            server.start(parent_age_s)
        except BaseException:  # noqa: BLE001 - told to the Celery process, which says why
            # At once: a half-built engine may have left threads and processes to wait on.
            os._exit(1)
        why = server.serve()
        if why is not None:
            server.die(why)
    # Stopped in order: the worker withdrawn, the engine shut down through vLLM (its processes
    # joined), Redis and the connection closed. All that is left is the interpreter's teardown,
    # and it is skipped, once every line is written. The start-up's objects were frozen out of
    # the collector's reach (gc.freeze, worker.host.runtime), so the teardown never frees them:
    # Triton's nanobind extension, which vLLM loads, then finds its objects alive when it unloads
    # and prints a "leaked instances / types / functions" list, hundreds of lines, at every
    # stop (measured: with the freeze and a normal exit it does, without the freeze it does not).
    # Nothing leaks: the exit frees it all. Unfreezing to collect first would walk millions of
    # objects for nothing. A failed start and a dead engine leave by os._exit too (above;
    # WorkerRuntime.die).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
