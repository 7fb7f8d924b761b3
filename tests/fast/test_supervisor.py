"""The one supervisor behind `genq up` and `genq worker --gpus` (genq/cli/supervisor.py), on
small shell children: its restart rules, its stop of each child then of every process group, its
signals.

`genq worker --gpus` runs it as a real process in tests/fast/test_worker_gpus.py (a restart after
an engine died, a failed start, the children's death with their parent); `genq up` in
tests/e2e/test_up.py.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genq.cli.supervisor import ALWAYS, NEVER, Child, Stop, Supervisor, exit_status

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _signals_restored() -> Iterator[None]:
    """The supervisor takes SIGTERM and SIGINT, then ignores them while it stops: give pytest
    its own handlers back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _sh(name: str, script: str, restart_after_s: float = NEVER) -> Child:
    return Child(name, ["sh", "-c", script], dict(os.environ), restart_after_s)


def _gone(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_child_that_exits_sooner_than_its_restart_after_s_fails_the_whole() -> None:
    supervisor = Supervisor(grace_s=5.0, poll_s=0.05, restart_delay_s=0.1)
    steady = _sh("steady", "exec sleep 30")
    failing = _sh("failing", "sleep 0.3; exit 3", restart_after_s=10.0)
    restarted: list[str] = []
    try:
        supervisor.start(steady)
        supervisor.start(failing)
        failed = supervisor.supervise(lambda child, code, up_s: restarted.append(child.name))
        assert (failed.child, failed.code) == (failing, 3)
        assert 0.3 <= failed.up_s < 10.0
        assert restarted == []
        assert steady.poll() is None  # left to stop_all
    finally:
        supervisor.stop_all()
    assert steady.process is not None and steady.process.returncode == -signal.SIGTERM


def test_an_always_restarted_child_comes_back_however_soon_it_exits() -> None:
    supervisor = Supervisor(grace_s=5.0, poll_s=0.05, restart_delay_s=0.05)
    flapping = _sh("worker", "exit 2", restart_after_s=ALWAYS)
    # Never restarted: its exit ends the test's supervise.
    api = _sh("api", "sleep 1; exit 5")
    restarted: list[tuple[str, int, int]] = []
    try:
        supervisor.start(flapping)
        supervisor.start(api)
        failed = supervisor.supervise(
            lambda child, code, up_s: restarted.append((child.name, code, child.restarts))
        )
    finally:
        supervisor.stop_all()
    assert (failed.child, failed.code) == (api, 5)
    assert flapping.restarts >= 2
    assert restarted == [("worker", 2, n) for n in range(1, flapping.restarts + 1)]


def test_the_others_stay_watched_while_one_waits_for_its_restart() -> None:
    supervisor = Supervisor(grace_s=5.0, poll_s=0.05, restart_delay_s=30.0)
    flapping = _sh("worker", "exit 70", restart_after_s=ALWAYS)
    api = _sh("api", "sleep 0.5; exit 1")
    try:
        supervisor.start(flapping)
        supervisor.start(api)
        began = time.monotonic()
        failed = supervisor.supervise(lambda child, code, up_s: None)
        assert time.monotonic() - began < 10.0  # not after the worker's 30 s delay
    finally:
        supervisor.stop_all()
    assert failed.child is api
    assert flapping.restarts == 1 and flapping.restart_at is not None


def test_stop_all_stops_each_group_and_kills_what_ignores_sigterm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor(grace_s=1.0, poll_s=0.05, restart_delay_s=0.1)
    pid_file = tmp_path / "grandchild.pid"
    # A grandchild in the child's group, as vLLM's engine core is in the worker's.
    parent = _sh("worker", f"sleep 30 & echo $! > {pid_file}; wait")
    trapped = tmp_path / "trapped"
    stubborn = _sh("stubborn", f"trap '' TERM; touch {trapped}; sleep 30")
    supervisor.start(parent)
    supervisor.start(stubborn)
    deadline = time.monotonic() + 5.0
    # Both up: the grandchild started, and the stubborn child ignores SIGTERM already.
    while not pid_file.exists() or not pid_file.read_text().strip() or not trapped.exists():
        assert time.monotonic() < deadline, "the children never started"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    with caplog.at_level(logging.WARNING, logger="genq.cli.supervisor"):
        supervisor.stop_all()
    assert parent.process is not None and parent.process.returncode is not None
    assert stubborn.process is not None and stubborn.process.returncode == -signal.SIGKILL
    assert "stubborn did not stop in 1 s; killing it" in caplog.text
    assert "worker did not stop" not in caplog.text
    assert _gone(grandchild)


def test_sigterm_goes_to_the_child_which_stops_its_own_children_in_order(tmp_path: Path) -> None:
    """As a worker stops its engine through vLLM, which then stops the engine core: SIGTERM to
    the whole group reached the engine core first, and the engine logged its death."""
    supervisor = Supervisor(grace_s=5.0, poll_s=0.05, restart_delay_s=0.1)
    log, up = tmp_path / "log", tmp_path / "up"
    # The grandchild ("engine core") notes any SIGTERM, and ends when its parent says so (USR1).
    grandchild = (
        f"trap 'echo grandchild-term >> {log}' TERM; "
        f"trap 'echo grandchild-told >> {log}; exit 0' USR1; "
        f"touch {up}; while :; do sleep 0.05; done"
    )
    parent = _sh(
        "worker",
        f'sh -c "{grandchild}" & core=$!; '
        f"trap 'echo parent-term >> {log}; kill -USR1 $core; wait $core; exit 0' TERM; "
        "while :; do sleep 0.05; done",
    )
    supervisor.start(parent)
    deadline = time.monotonic() + 5.0
    while not up.exists():
        assert time.monotonic() < deadline, "the grandchild never started"
        time.sleep(0.05)
    supervisor.stop_all()
    assert log.read_text().split() == ["parent-term", "grandchild-told"]
    assert parent.process is not None and parent.process.returncode == 0


def test_a_signal_stops_the_watch_and_a_second_one_is_ignored() -> None:
    supervisor = Supervisor(grace_s=5.0, poll_s=0.05, restart_delay_s=0.1)
    supervisor.handle_signals()
    child = _sh("worker", "exec sleep 30")
    supervisor.start(child)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    try:
        with pytest.raises(Stop, match="SIGTERM"):
            supervisor.supervise(lambda child, code, up_s: None)
        # Until the drain is over, another Ctrl-C or SIGTERM cannot cut it short.
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        supervisor.stop_all()
    assert child.process is not None and child.process.returncode == -signal.SIGTERM


class _SignalledWhileStarting(Child):
    def start(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, before Popen
        super().start()


def test_a_signal_while_a_child_starts_waits_until_the_child_is_known() -> None:
    """Raised in the middle of Popen, ``Stop`` would leave a started process that nothing stops;
    it comes once the child is recorded, and stop_all reaches it."""
    supervisor = Supervisor(grace_s=5.0, poll_s=0.05, restart_delay_s=0.1)
    supervisor.handle_signals()
    child = _SignalledWhileStarting("worker", ["sh", "-c", "exec sleep 30"], dict(os.environ))
    try:
        with pytest.raises(Stop, match="SIGINT"):
            supervisor.start(child)
        assert child.process is not None and child.process.poll() is None
    finally:
        supervisor.stop_all()
    assert child.process is not None and child.process.returncode == -signal.SIGTERM


def test_a_failed_childs_code_never_reads_as_success() -> None:
    assert exit_status(3) == 3
    assert exit_status(0) == 1  # exited at once "fine": still a failed start
    assert exit_status(-signal.SIGKILL) == 128 + signal.SIGKILL  # as a shell says


def test_the_supervisor_imports_only_the_standard_library() -> None:
    code = (
        "import sys; before = set(sys.modules); import genq.cli.supervisor\n"
        "new = set(sys.modules) - before\n"
        "print(sorted(m for m in new if m.split('.')[0] not in sys.stdlib_module_names))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.stdout.strip() == "['genq', 'genq.cli', 'genq.cli.supervisor']", out.stderr
