"""What genq adds to one job at low load, part by part: one job in flight at a time.

    .venv/bin/python ops/bench/overhead.py                    # here: 200 jobs x 16 tokens
    python3 ops/bench/overhead.py --engine-args '{"load_format": "dummy"}' --out x.json  # a GPU

Starts Redis, the API and one worker (ops/bench/bench.py's ``Stack``), sends ``--jobs`` jobs to
``POST /generate`` one after another (closed loop, c = 1, loadgen.py) and prints, per part,
p50/p90/p99 in ms:

  client -> accepted     client sends -> the API stamps the job accepted (HTTP, validation)
  accepted -> started    the API's enqueue, Redis, Celery's fetch and hand-off, the engine loop
  worker, not engine     the worker's time on the job outside the engine: claim, result write
  completed -> client    result written, the API told (pub/sub), the answer sent and read
  overhead               client's latency minus the engine's time for the job (the target)

Two ways to send them, both printed: back to back (the next job sent as the answer arrives, so
it meets the previous job's last bookkeeping: Celery's acknowledgement and events, the API's
clean-up), and with ``--think-ms`` of idle time between jobs (each job meets an idle stack: low
load as a user sees it). The first ``--skip`` jobs of each are left out (the first of a fresh
stack pay one-time costs: cold-start.md measures those). The target: overhead p50 <= 5 ms.

``--hold-cpu-latency-us N`` measures both ways again while this process holds Linux's PM QoS
request (``/dev/cpu_dma_latency``, root only): no core sleeps in an idle state that takes longer
than N µs to leave, for the whole machine, as tuned's latency-performance profile does. Each hop
of a job's way (client, API, Redis, Celery's consumer, the engine host) wakes a process whose
core may have gone to sleep while it waited; beside the plain runs this says how much of the
overhead is those wake-ups. The host's idle states are printed with the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ops.bench import loadgen  # noqa: E402
from ops.bench.bench import Stack  # noqa: E402
from ops.bench.report import pct  # noqa: E402

TARGET_MS = 5.0


def parts(run: dict, skip: int) -> dict[str, list[float]]:
    """Each part's milliseconds per job, the first ``skip`` jobs left out."""
    out: dict[str, list[float]] = {
        "client -> accepted": [],
        "accepted -> started": [],
        "worker, not engine": [],
        "completed -> client": [],
        "overhead": [],
    }
    rows = zip(
        run["records"],
        run["send_to_accept_ms"],
        run["stored_to_client_ms"],
        run["overhead_ms"],
        strict=True,
    )
    for record, to_accept, to_client, overhead in list(rows)[skip:]:
        m = record["metrics"]
        worker_ms = (record["completed"] - record["created"]) * 1000 - m["queue_ms"]
        out["client -> accepted"].append(to_accept)
        out["accepted -> started"].append(m["queue_ms"])
        out["worker, not engine"].append(worker_ms - m["generation_ms"])
        out["completed -> client"].append(to_client)
        out["overhead"].append(overhead)
    return out


def render(measured: dict[str, list[float]]) -> str:
    lines = [f"{'part (ms)':<22} {'p50':>7} {'p90':>7} {'p99':>7}"]
    for name, values in measured.items():
        q = [pct(values, x) for x in (50, 90, 99)]
        lines.append(f"{name:<22} {q[0]:7.2f} {q[1]:7.2f} {q[2]:7.2f}")
    p50 = pct(measured["overhead"], 50)
    verdict = "met" if p50 <= TARGET_MS else "not met"
    lines.append(f"overhead p50 {p50:.2f} ms: target <= {TARGET_MS:g} ms {verdict}")
    return "\n".join(lines)


def idle_states() -> str:
    """The kernel's idle driver and the idle states of core 0, with their exit latencies."""
    root = Path("/sys/devices/system/cpu")
    try:
        driver = (root / "cpuidle/current_driver").read_text().strip()
    except OSError:
        return "idle states: unknown (no cpuidle in /sys)"
    states = []
    for state in sorted((root / "cpu0/cpuidle").glob("state*")):
        name = (state / "name").read_text().strip()
        latency = (state / "latency").read_text().strip()
        disabled = (state / "disable").read_text().strip() == "1"
        states.append(f"{name} {latency} µs" + (" (disabled)" if disabled else ""))
    return f"idle driver {driver}: " + ", ".join(states)


@contextlib.contextmanager
def cpu_latency_held(us: int) -> Iterator[None]:
    """Linux's PM QoS request: while the file stays open, no core enters an idle state that
    takes longer than ``us`` µs to leave."""
    fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
    try:
        os.write(fd, struct.pack("i", us))
        yield
    finally:
        os.close(fd)  # the request ends with the file


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--tokens", type=int, default=16, help="output tokens each (forced)")
    p.add_argument("--skip", type=int, default=10, help="first jobs left out")
    p.add_argument("--think-ms", type=float, default=20.0, help="idle time between jobs")
    p.add_argument("--engine-args", default="{}")
    p.add_argument("--out", type=Path, help="every job's numbers, as JSON")
    p.add_argument(
        "--hold-cpu-latency-us",
        type=int,
        metavar="N",
        help="measure both ways again holding /dev/cpu_dma_latency at N µs (root)",
    )
    args = p.parse_args()
    jobs = [
        {
            "prompt": f"Question {i}: what is the capital of France?",
            "max_tokens": args.tokens,
            "min_tokens": args.tokens,
        }
        for i in range(args.jobs)
    ]
    work = Path(tempfile.mkdtemp(prefix="genq-overhead-"))
    stack = Stack(work, worker_concurrency=8, engine_args=args.engine_args)
    modes = {"back to back": 0.0, f"{args.think_ms:g} ms apart": args.think_ms / 1000}
    holds: dict[str, contextlib.AbstractContextManager[None]] = {"": contextlib.nullcontext()}
    if args.hold_cpu_latency_us is not None:
        n = args.hold_cpu_latency_us
        holds[f", idle cores within {n} µs of waking"] = cpu_latency_held(n)
    measured: dict[str, dict[str, list[float]]] = {}
    try:
        stack.wait_ready()
        for held, hold in holds.items():
            with hold:
                for mode, think_s in modes.items():
                    run = loadgen.run_genq(stack.url, jobs, 1, keep_records=True, think_s=think_s)
                    measured[mode + held] = parts(run, args.skip)
    finally:
        stack.stop()
    states = idle_states()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = {"args": vars(args), "idle_states": states, "parts_ms": measured}
        args.out.write_text(json.dumps(out, default=str))
    print(states)
    for mode, values in measured.items():
        print(f"\n{args.jobs} jobs x {args.tokens} tokens, one in flight, {mode}:")
        print(render(values))


if __name__ == "__main__":
    main()
