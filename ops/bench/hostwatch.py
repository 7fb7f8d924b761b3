"""Where the host's CPU went while one benchmark level ran, and how full the engine's batch was.

    with HostWatch({"worker": pid}, metrics_url="http://127.0.0.1:PORT/metrics") as watch:
        run the level
    watch.summary()  # -> a dict for the result JSON (report.py prints it)

- **cores**: CPU time each watched process and each of its descendants used, divided by the wall
  time (1.0 = one core busy all along), from ``/proc/<pid>/stat``; a process is named by its
  root's label and its own ``comm`` (vLLM names its engine process ``VLLM::EngineCore``);
- **threads**: the same for the threads of each watched root, summed by thread name (a Python
  process whose busiest thread is near 1.0 is bound by its GIL);
- **host_busy_cores**: all of the host's busy CPU time (``/proc/stat``) over the wall time;
- **engine**: genq's engine gauges (``genq_engine_running_requests`` and ``..._waiting_...``,
  set after every engine step) sampled every ``interval_s``: is the batch full, is there a queue
  inside the engine. Only where a metrics URL is given.

Linux only (reads ``/proc``); elsewhere it records nothing.
"""

from __future__ import annotations

import os
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


def _processes() -> dict[int, tuple[str, int, float]]:
    out = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(entry / "stat")) is not None:
            out[int(entry.name)] = stat
    return out


def _host_busy_s() -> float:
    values = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) * TICK_S


def _snapshot(roots: dict[str, int]) -> dict[str, dict[str, float]]:
    procs = _processes()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (_, ppid, _) in procs.items():
        children[ppid].append(pid)
    cores: dict[str, float] = defaultdict(float)
    threads: dict[str, float] = defaultdict(float)
    others = set(roots.values())
    for label, root in roots.items():
        todo = [root]
        while todo:
            pid = todo.pop()
            todo += [child for child in children.get(pid, []) if child not in others]
            if pid not in procs:
                continue
            comm, _, cpu_s = procs[pid]
            cores[label if pid == root else f"{label}/{comm}"] += cpu_s
        for task in (PROC / str(root) / "task").glob("*"):
            if (stat := _stat(task / "stat")) is not None:
                threads[f"{label}: {stat[0]}"] += stat[2]
    return {"cores": dict(cores), "threads": dict(threads), "host": {"busy": _host_busy_s()}}


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

    def __enter__(self) -> HostWatch:
        self._enabled = PROC.is_dir()
        if self._enabled:
            self._t0 = time.monotonic()
            self._before = _snapshot(self.roots)
            if self.metrics_url:
                self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._enabled:
            return
        self._after = _snapshot(self.roots)
        self._wall_s = time.monotonic() - self._t0
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

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
            "cores": {k: v for k, v in rate("cores").items() if v >= 0.01},
            "threads": {k: v for k, v in rate("threads").items() if v >= 0.01},
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
