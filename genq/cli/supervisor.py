"""The one supervisor behind `genq up` (genq.cli.up) and `genq worker --gpus` (genq.cli.gpus):
start child processes, watch them, restart or give up, and stop them all.

Each child runs in a process group of its own, so that stopping it reaches its own children too
(vLLM's engine-core processes), and optionally gets SIGTERM when the supervisor dies, even by
SIGKILL. A child that exits is restarted, after ``restart_delay_s``, if it was up at least its
``restart_after_s``; one that exits sooner fails the whole: ``supervise`` returns it, for the
caller to say so and stop everything. ``ALWAYS`` (0) restarts whatever the uptime, ``NEVER``
(infinity) never restarts. SIGTERM or SIGINT raises ``Stop``; stopping sends SIGTERM to each
child, waits up to the grace for all, then SIGKILLs whatever is left of each group.

SIGTERM goes to the child alone, not to its group: the child stops its own children, in the
order they need. A worker shuts its engine down through vLLM, which stops its engine core in its
own order; a SIGTERM to the whole group reached the engine core first, which then ended under the
engine still reading from it, and vLLM logged that as the engine's death (``EngineDeadError``,
with its traceback). SIGKILL, once the child has exited or the grace is over, goes to the whole
group: nothing of it is left behind.

Stdlib only: no torch, vLLM, Celery or Redis client here, so the supervisor starts at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

ALWAYS = 0.0  # restart_after_s: restarted however soon it exits
NEVER = math.inf  # restart_after_s: any exit fails the whole
KILL_WAIT_S = 5.0  # after SIGKILL, how long to wait for the process to be reaped
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


class Stop(BaseException):
    """SIGTERM or SIGINT came; the message is the signal's name. A BaseException, as
    KeyboardInterrupt is, so that no ``except Exception`` on the way (logging's own, around a
    write to stderr) swallows it."""


def _die_with_parent(parent_pid: int) -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, even by SIGKILL (`genq up`
    past its grace, the OOM killer). The child is in a session of its own, so nothing else would
    reach it, and its engine would keep its GPUs."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)


@dataclass(eq=False)  # one process each: two children alike are still two
class Child:
    name: str
    argv: Sequence[str]
    env: dict[str, str]
    # Up at least this long, then exited: restarted. Sooner: it failed to start, and restarting
    # it would only loop, so the whole stops.
    restart_after_s: float = NEVER
    die_with_parent: bool = False
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.monotonic()
    restart_at: float | None = None  # exited; to be started again then
    restarts: int = 0

    def start(self) -> None:
        # The supervisor runs no threads, so preexec_fn is safe here.
        die = functools.partial(_die_with_parent, os.getpid()) if self.die_with_parent else None
        self.process = subprocess.Popen(
            list(self.argv),
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopping it reaches its children
            preexec_fn=die,  # noqa: PLW1509
        )
        self.started_at, self.restart_at = time.monotonic(), None

    def poll(self) -> int | None:
        """Its exit code once it exited; None while it runs or waits for its restart."""
        if self.process is None or self.restart_at is not None:
            return None
        return self.process.poll()

    def signal(self, sig: int) -> None:
        """``sig`` to the child alone; to nothing once it has exited."""
        if self.process is not None:
            self.process.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def wait(self, timeout_s: float) -> bool:
        """Whether it has exited within ``timeout_s``."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True


@dataclass
class Failed:
    """A child that exited sooner than its ``restart_after_s``: the whole stops."""

    child: Child
    code: int
    up_s: float


def exit_status(code: int) -> int:
    """A failed child's code, for the supervisor to exit with: never 0 (it failed), 128+N for a
    child killed by signal N, as a shell says."""
    return 128 - code if code < 0 else (code or 1)


class Supervisor:
    """The children of one process: started, watched, restarted, stopped together."""

    def __init__(self, grace_s: float, poll_s: float, restart_delay_s: float) -> None:
        self.grace_s = grace_s  # SIGTERM -> SIGKILL, for all children together
        self.poll_s = poll_s
        self.restart_delay_s = restart_delay_s
        self.children: list[Child] = []
        self._stop: str | None = None  # the signal's name, once one came
        self._starting = False

    def handle_signals(self) -> None:
        """From now on SIGTERM and SIGINT raise ``Stop`` in the main thread."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop = signal.Signals(signum).name
        # In the middle of Popen, Stop would leave a process started that nothing knows of: it
        # comes once Popen has returned.
        if not self._starting:
            self._raise_stop()

    def _raise_stop(self) -> None:
        # A second signal must not cut the drain short. Never while a child starts: it would
        # inherit the SIG_IGN, and then ignore the SIGTERM that stops it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Stop(self._stop)

    def start(self, child: Child) -> None:
        """Start ``child`` and watch it from now on."""
        if child not in self.children:  # not yet watched: a restart is one already
            self.children.append(child)
        self._starting = True
        try:
            child.start()
        finally:
            self._starting = False
        if self._stop is not None:
            self._raise_stop()

    def supervise(
        self,
        on_restart: Callable[[Child, int, float], None],
        on_poll: Callable[[], None] | None = None,
    ) -> Failed:
        """Watch the children until one fails the whole (returned), or a signal (``Stop``).
        ``on_restart(child, code, up_s)`` says that one exited and will be started again;
        ``on_poll`` runs after each look at the children."""
        while True:
            time.sleep(self.poll_s)
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        self.start(child)
                    continue
                code = child.poll()
                if code is None:
                    continue
                up_s = now - child.started_at
                if up_s < child.restart_after_s:
                    return Failed(child, code, up_s)
                child.restarts += 1
                on_restart(child, code, up_s)
                child.signal_group(signal.SIGKILL)  # its engine core, if it outlived it
                child.restart_at = now + self.restart_delay_s
            if on_poll is not None:
                on_poll()

    def stop_all(self) -> None:
        """SIGTERM to each child (workers drain, then stop their engines), up to the grace for
        all, then SIGKILL to whatever is left of each group (an engine core that outlived its
        parent)."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut it short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in self.children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in self.children:
            if not child.wait(max(0.0, deadline - time.monotonic())):
                log.warning("%s did not stop in %.0f s; killing it", child.name, self.grace_s)
            child.signal_group(signal.SIGKILL)
            child.wait(KILL_WAIT_S)
