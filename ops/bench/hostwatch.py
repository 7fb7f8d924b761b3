"""Where the host's CPU went while one benchmark level ran, and how full the engine's batch was.

    with HostWatch({"worker": pid}, metrics_url="http://127.0.0.1:PORT/metrics") as watch:
        run the level
    watch.summary()  # -> a dict for the result JSON (report.py prints it)

- **cores**: CPU time each watched process and each of its descendants used, divided by the wall
  time (1.0 = one core busy all along), from ``/proc/<pid>/stat``; a process is named by its
  root's label and its own ``comm`` (vLLM names its engine process ``VLLM::EngineCore``);
- **threads**: the same for the threads of each watched process (roots and descendants), summed
  by process and thread name (a Python process whose busiest thread is near 1.0 is bound by its
  GIL);
- **runqueue**: per process, the time its threads were ready to run but waited for a CPU
  (``/proc/<pid>/task/<tid>/schedstat``), over the wall time: near 0 when every busy thread has a
  core, high when the process competes for CPUs;
- **gpu**: the GPU's mean utilization (% of time a kernel ran) and SM clock, sampled by
  ``nvidia-smi`` every 200 ms, where it exists;
- **host_busy_cores**: all of the host's busy CPU time (``/proc/stat``) over the wall time;
  **host_steal_cores**: the time a hypervisor ran something else on this VM's virtual CPUs;
- **engine**: genq's engine gauges (``genq_engine_running_requests`` and ``..._waiting_...``,
  set after every engine step) sampled every ``interval_s``: is the batch full, is there a queue
  inside the engine. Only where a metrics URL is given.

Linux only (reads ``/proc``); elsewhere it records nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

PROC = Path("/proc")
TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _stat(path: Path) -> tuple[str, int, float] | None:
    """(comm, parent pid, CPU seconds) of one ``/proc/.../stat`` file."""
    try:
        text = path.read_text()
    except OSError:  # the process or thread is gone
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # After the comm: state, ppid, ..., utime (14th field of the file), stime (15th).
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) * TICK_S


def _runqueue_s(pid: int) -> float:
    """Seconds the threads of a process have waited on a run queue (schedstat's 2nd field, ns)."""
    total = 0
    for task in (PROC / str(pid) / "task").glob("*"):
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def _processes() -> dict[int, tuple[str, int, float]]:
    out = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(entry / "stat")) is not None:
            out[int(entry.name)] = stat
    return out


def _host_cpu_s() -> dict[str, float]:
    """The host's busy CPU seconds, and those a hypervisor took from its virtual CPUs (steal)."""
    values = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    steal = values[7]
    return {"busy": (sum(values[:7]) - idle) * TICK_S, "steal": steal * TICK_S}


def _snapshot(roots: dict[str, int]) -> dict[str, dict[str, float]]:
    procs = _processes()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (_, ppid, _) in procs.items():
        children[ppid].append(pid)
    cores: dict[str, float] = defaultdict(float)
    threads: dict[str, float] = defaultdict(float)
    runqueue: dict[str, float] = defaultdict(float)
    others = set(roots.values())
    for label, root in roots.items():
        todo = [root]
        while todo:
            pid = todo.pop()
            todo += [child for child in children.get(pid, []) if child not in others]
            if pid not in procs:
                continue
            comm, _, cpu_s = procs[pid]
            name = label if pid == root else f"{label}/{comm}"
            cores[name] += cpu_s
            runqueue[name] += _runqueue_s(pid)
            for task in (PROC / str(pid) / "task").glob("*"):
                if (stat := _stat(task / "stat")) is not None:
                    threads[f"{name}: {stat[0]}"] += stat[2]
    return {
        "cores": dict(cores),
        "threads": dict(threads),
        "runqueue": dict(runqueue),
        "host": _host_cpu_s(),
    }


def _gauges(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("genq_engine_running_requests", "genq_engine_waiting_requests"):
            out[name.split("_")[2]] = float(value)
    return out


class HostWatch:
    def __init__(
        self, roots: dict[str, int], metrics_url: str | None = None, interval_s: float = 0.2
    ):
        self.roots = roots
        self.metrics_url = metrics_url
        self.interval_s = interval_s
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._smi: subprocess.Popen | None = None

    def __enter__(self) -> HostWatch:
        self._enabled = PROC.is_dir()
        if self._enabled:
            if shutil.which("nvidia-smi"):
                self._smi = subprocess.Popen(
                    [
                        "nvidia-smi",
                        "--query-gpu=utilization.gpu,clocks.sm",
                        "--format=csv,noheader,nounits",
                        "-lms",
                        "200",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            self._t0 = time.monotonic()
            self._before = _snapshot(self.roots)
            if self.metrics_url:
                self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the window (the load is over); later calls, and the ``with``'s exit, keep it."""
        if not self._enabled or self._stop.is_set():
            return
        self._after = _snapshot(self.roots)
        self._wall_s = time.monotonic() - self._t0
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._gpu = []
        if self._smi is not None:
            self._smi.terminate()
            out, _ = self._smi.communicate(timeout=10)
            for line in out.splitlines():
                try:
                    util, clock = (float(v) for v in line.split(",")[:2])
                except ValueError:
                    continue
                self._gpu.append((util, clock))

    def _sample(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._stop.wait(self.interval_s):
                try:
                    self.samples.append(_gauges(client.get(self.metrics_url).text))
                except httpx.HTTPError:
                    pass

    def summary(self) -> dict:
        if not self._enabled:
            return {}

        def rate(part: str) -> dict[str, float]:
            after, before = self._after[part], self._before[part]
            used = {k: (v - before.get(k, 0.0)) / self._wall_s for k, v in after.items()}
            return {k: round(v, 3) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}

        out: dict = {
            "wall_s": round(self._wall_s, 2),
            "host_busy_cores": rate("host")["busy"],
            "host_steal_cores": rate("host")["steal"],
            "cores": {k: v for k, v in rate("cores").items() if v >= 0.01},
            "threads": {k: v for k, v in rate("threads").items() if v >= 0.01},
            "runqueue": {k: v for k, v in rate("runqueue").items() if v >= 0.005},
        }
        if self._gpu:
            out["gpu"] = {
                "samples": len(self._gpu),
                "util_mean": round(sum(u for u, _ in self._gpu) / len(self._gpu), 1),
                "sm_clock_mean": round(sum(c for _, c in self._gpu) / len(self._gpu)),
            }
        running = [s["running"] for s in self.samples if "running" in s]
        waiting = [s["waiting"] for s in self.samples if "waiting" in s]
        if running:
            ordered = sorted(running)
            out["engine"] = {
                "samples": len(running),
                "running_mean": round(sum(running) / len(running), 1),
                "running_p10": ordered[len(ordered) // 10],
                "waiting_mean": round(sum(waiting) / max(1, len(waiting)), 1),
                "waiting_zero_share": round(sum(w == 0 for w in waiting) / max(1, len(waiting)), 3),
            }
        return out
