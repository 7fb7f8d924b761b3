"""`genq worker --gpus 0,1`: one worker process per GPU group on this host, under a small
supervisor.

The GPUs split into consecutive groups of the engine's ``tensor_parallel_size``; each group gets a
child ``genq worker`` that sees only its GPUs (``CUDA_VISIBLE_DEVICES``), a name of its own and,
when ``GENQ_WORKER_HTTP_PORT`` is P, port P+i. Each child runs in its own process group, so that
stopping it reaches vLLM's engine-core processes too.

A child that was up for ``RESTART_AFTER_S`` and then exits (a worker exits 70 when its engine
dies) is restarted. One that exits sooner failed to start (bad model or config, no such GPU):
restarting it would only loop, so the others are stopped and the supervisor exits with its code,
for the orchestrator to see. SIGTERM or SIGINT drains every child (SIGTERM to each group, the
workers' grace, then SIGKILL) and exits 0.

Stdlib and genq.contract.settings only: no torch, vLLM or Celery here, so the supervisor starts at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from genq.contract.settings import WorkerSettings

log = logging.getLogger(__name__)

WORKER_ARGV = (sys.executable, "-m", "genq.cli.main", "worker")
RESTART_AFTER_S = 60.0  # up at least this long, then exited: its engine died; restart it
RESTART_DELAY_S = 2.0
POLL_S = 0.2
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class GpuSpecError(ValueError):
    """A ``--gpus`` value that cannot be split into engines; the message is for the operator."""


def gpu_groups(spec: str, tensor_parallel_size: object = 1) -> list[list[str]]:
    """``"0,1,2,3"`` with TP 2 -> ``[["0", "1"], ["2", "3"]]``: one engine per group."""
    ids = [part.strip() for part in spec.split(",")]
    if not spec.strip() or any(not i for i in ids):
        raise GpuSpecError(f"--gpus {spec!r}: empty GPU id (expected e.g. 0,1)")
    bad = [i for i in ids if not re.fullmatch(r"[0-9]+", i)]
    if bad:
        raise GpuSpecError(f"--gpus {spec!r}: not a GPU index: {', '.join(bad)}")
    ids = [str(int(i)) for i in ids]  # "01" and "1" are the same GPU
    if len(set(ids)) != len(ids):
        raise GpuSpecError(f"--gpus {spec!r}: a GPU is listed twice")
    tp = tensor_parallel_size
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise GpuSpecError(f"tensor_parallel_size {tp!r} in GENQ_ENGINE_ARGS is not a count")
    if len(ids) % tp:
        raise GpuSpecError(
            f"--gpus {spec!r}: {len(ids)} GPUs do not split into engines of "
            f"tensor_parallel_size {tp} (GENQ_ENGINE_ARGS)"
        )
    return [ids[i : i + tp] for i in range(0, len(ids), tp)]


_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_parent(parent_pid: int) -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, even by SIGKILL (`genq up`
    past its grace, the OOM killer). The child is in a session of its own, so nothing else would
    reach it, and its engine would keep its GPUs."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)


@dataclass
class Child:
    name: str
    env: dict[str, str]
    argv: Sequence[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # exited; to be started again then
    restarts: int = 0

    def start(self) -> None:
        self.process = subprocess.Popen(
            list(self.argv),
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopping it reaches its children
            # The supervisor runs no threads, so preexec_fn is safe here.
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),  # noqa: PLW1509
        )
        self.started_at, self.restart_at = time.monotonic(), None

    def signal_group(self, sig: int) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass


def children_for(
    settings: WorkerSettings, groups: list[list[str]], argv: Sequence[str]
) -> list[Child]:
    base_name = settings.worker_name or f"genq@{socket.gethostname()}"
    port = settings.worker_http_port
    children = []
    for i, group in enumerate(groups):
        env = dict(os.environ)
        env.pop("GENQ_WORKER_GPUS", None)  # the child is an ordinary worker
        env["CUDA_VISIBLE_DEVICES"] = ",".join(group)
        env["GENQ_WORKER_NAME"] = f"{base_name}-gpu{'-'.join(group)}"
        if port:  # 0 (any free port) stays 0 for each
            env["GENQ_WORKER_HTTP_PORT"] = str(port + i)
        children.append(Child(env["GENQ_WORKER_NAME"], env, argv))
    return children


def stop_all(children: list[Child], grace_s: float) -> None:
    """SIGTERM to each group (the workers drain), up to ``grace_s`` for all, then SIGKILL to
    whatever is left of each group (an engine core that outlived its worker)."""
    for child in children:
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", child.name, grace_s)
        child.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(5)


def _exit_code(code: int) -> int:
    """A failed child's code, for the supervisor to exit with: never 0 (it failed), 128+N for a
    child killed by signal N, as a shell says."""
    return 128 - code if code < 0 else (code or 1)


def run(
    settings: WorkerSettings,
    gpus: str,
    argv: Sequence[str] = WORKER_ARGV,
    restart_after_s: float = RESTART_AFTER_S,
    restart_delay_s: float = RESTART_DELAY_S,
) -> int:
    """Supervise one ``argv`` process per GPU group until SIGTERM/SIGINT (0), or until one fails
    at start (its code). A bad ``gpus`` is exit 2 with one line on stderr, before any child."""
    try:
        groups = gpu_groups(gpus, settings.engine_args.get("tensor_parallel_size", 1))
    except GpuSpecError as exc:
        print(f"genq worker: {exc}", file=sys.stderr)
        return 2
    port = settings.worker_http_port
    if port and port + len(groups) - 1 > 65535:
        print(f"genq worker: ports {port}..{port + len(groups) - 1} pass 65535", file=sys.stderr)
        return 2
    stop: list[str] = []  # the signal's name, once one came: the loop below notices
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.append(signal.Signals(signum).name))
    children = children_for(settings, groups, argv)
    grace_s = settings.shutdown_grace_s + 10.0
    try:
        for child in children:
            child.start()
            child_port = child.env.get("GENQ_WORKER_HTTP_PORT", "none")
            gpu_ids = child.env["CUDA_VISIBLE_DEVICES"]
            log.info("worker %s: CUDA_VISIBLE_DEVICES=%s, port %s", child.name, gpu_ids, child_port)
        return _supervise(children, stop, restart_after_s, restart_delay_s)
    finally:
        # A second signal must not cut the drain short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all(children, grace_s)


def _supervise(
    children: list[Child], stop: list[str], restart_after_s: float, restart_delay_s: float
) -> int:
    while not stop:
        time.sleep(POLL_S)
        now = time.monotonic()
        for child in children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.start()
                continue
            code = child.process.poll() if child.process is not None else None
            if code is None:
                continue
            up_s = now - child.started_at
            if up_s < restart_after_s:
                msg = "worker %s exited (%d) %.1f s after its start: start-up failed; stopping all"
                log.error(msg, child.name, code, up_s)
                return _exit_code(code)
            child.restarts += 1
            msg = "worker %s exited (%d) after %.0f s up; restart #%d in %g s"
            log.warning(msg, child.name, code, up_s, child.restarts, restart_delay_s)
            child.signal_group(signal.SIGKILL)  # its engine core, if it outlived it
            child.restart_at = now + restart_delay_s
    log.info("%s: stopping %d workers", stop[0], len(children))
    return 0
