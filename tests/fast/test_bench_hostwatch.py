"""The benchmark's host watch (ops/bench/hostwatch.py) on real processes: CPU by process and by
thread for a root and its children, and the time their threads waited for a CPU."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ops.bench.hostwatch import PROC, HostWatch
from ops.bench.report import describe_host

pytestmark = pytest.mark.skipif(not PROC.is_dir(), reason="reads /proc (Linux)")

# A parent that starts a child; both spin three threads each, more than this machine's cores
# on most CI runners, so some of them wait for a CPU.
SPIN = """
import subprocess, sys, threading, time
def spin():
    end = time.monotonic() + 30
    while time.monotonic() < end:
        pass
if sys.argv[-1] == "parent":
    subprocess.Popen([sys.executable, "-c", sys.argv[1], "child"])
for _ in range(3):
    threading.Thread(target=spin, daemon=True).start()
time.sleep(30)
"""


def test_counts_a_root_and_its_children_by_process_and_thread() -> None:
    parent = subprocess.Popen([sys.executable, "-c", SPIN, SPIN, "parent"])
    try:
        time.sleep(1.0)  # the child is up and spinning
        with HostWatch({"spinner": parent.pid}) as watch:
            time.sleep(2.0)
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()
    summary = watch.summary()
    cores = summary["cores"]
    # The parent and its child ("spinner/python..."), each near one core (one GIL each).
    assert cores["spinner"] > 0.3
    (child,) = [name for name in cores if name.startswith("spinner/")]
    assert cores[child] > 0.3
    # Threads of the child are listed too, under its name.
    assert any(name.startswith(f"{child}: ") for name in summary["threads"])
    assert summary["host_busy_cores"] >= cores["spinner"] + cores[child] - 0.2
    assert summary["host_steal_cores"] >= 0
    # Six spinning threads (two GILs) on the cores there are: a wait, where schedstat exists.
    assert set(summary["runqueue"]) <= set(cores)
    line = describe_host(summary)
    assert line.startswith("host ") and "spinner" in line


def test_stop_ends_the_window_before_the_block_does() -> None:
    # The window ends at stop(): what the block does after it (genq's records read back one by
    # one) is no part of the load, neither in the wall time nor in the CPU counted.
    spinner = subprocess.Popen([sys.executable, "-c", SPIN, "alone"])
    try:
        with HostWatch({"spinner": spinner.pid}) as watch:
            time.sleep(1.0)
            watch.stop()
            time.sleep(1.5)
    finally:
        spinner.kill()
        spinner.wait()
    summary = watch.summary()
    assert 0.9 <= summary["wall_s"] < 1.5
    assert summary["cores"]["spinner"] > 0.3
