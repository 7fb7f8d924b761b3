"""`genq worker --gpus 0,1`: one worker process per GPU group on this host, under a small
supervisor.

The GPUs split into consecutive groups of the engine's ``tensor_parallel_size``; each group gets a
child ``genq worker`` that sees only its GPUs (``CUDA_VISIBLE_DEVICES``), a name of its own and,
when ``GENQ_WORKER_HTTP_PORT`` is P, port P+i. Each child runs in its own process group, so that
stopping it reaches vLLM's engine-core processes too.

A child that was up for ``RESTART_AFTER_S`` and then exits (a worker exits 70 when its engine
dies) is restarted. One that exits sooner failed to start (bad model or config, no such GPU):
restarting it would only loop, so the others are stopped and the supervisor exits with its code,
for the orchestrator to see. SIGTERM or SIGINT drains every child (SIGTERM to each child, which
stops its own processes in order; the workers' grace; then SIGKILL to each group) and exits 0.

The starting, watching and stopping are genq.cli.supervisor's, as for `genq up`. Stdlib and
genq.contract.settings only: no torch, vLLM or Celery here, so the supervisor starts at once.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import sys
from collections.abc import Sequence

from genq.cli.supervisor import Child, Failed, Stop, Supervisor, exit_status
from genq.contract.settings import WorkerSettings

log = logging.getLogger(__name__)

WORKER_ARGV = (sys.executable, "-m", "genq.cli.main", "worker")
RESTART_AFTER_S = 60.0  # up at least this long, then exited: its engine died; restart it
RESTART_DELAY_S = 2.0
POLL_S = 0.2


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


def children_for(
    settings: WorkerSettings,
    groups: list[list[str]],
    argv: Sequence[str],
    restart_after_s: float = RESTART_AFTER_S,
) -> list[Child]:
    """One child per GPU group; each dies with the supervisor, so that no engine keeps its GPUs
    after it."""
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
        name = env["GENQ_WORKER_NAME"]
        children.append(Child(name, argv, env, restart_after_s, die_with_parent=True))
    return children


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
    # The workers' own drain, and then time to exit, before SIGKILL.
    supervisor = Supervisor(settings.shutdown_grace_s + 10.0, POLL_S, restart_delay_s)
    supervisor.handle_signals()
    children = children_for(settings, groups, argv, restart_after_s)
    try:
        for child in children:
            supervisor.start(child)
            child_port = child.env.get("GENQ_WORKER_HTTP_PORT", "none")
            gpu_ids = child.env["CUDA_VISIBLE_DEVICES"]
            log.info("worker %s: CUDA_VISIBLE_DEVICES=%s, port %s", child.name, gpu_ids, child_port)
        return _failed(supervisor.supervise(functools.partial(_restarted, restart_delay_s)))
    except Stop as stop:
        log.info("%s: stopping %d workers", stop, len(children))
        return 0
    finally:
        supervisor.stop_all()


def _restarted(delay_s: float, child: Child, code: int, up_s: float) -> None:
    msg = "worker %s exited (%d) after %.0f s up; restart #%d in %g s"
    log.warning(msg, child.name, code, up_s, child.restarts, delay_s)


def _failed(failed: Failed) -> int:
    msg = "worker %s exited (%d) %.1f s after its start: start-up failed; stopping all"
    log.error(msg, failed.child.name, failed.code, failed.up_s)
    return exit_status(failed.code)
