"""A model of the engine's batch at saturation, to weigh admission rules before a GPU measures them.

    .venv/bin/python ops/bench/batch_model.py          # ~10 s, no GPU, no engine

It steps a batch of ``--batch`` slots through a closed-loop run (``--jobs`` jobs of ``--tokens``
forced tokens, ``--in-flight`` at a time) under genq's real admission rules
(worker.host.scheduler, over a stand-in for vLLM's scheduler, on the model's clock) and under
vLLM's, with three ways in:

- **offline limit**: every job waits in the engine at the start;
- **`vllm serve`**: the opening burst reaches the engine at once (``--serve-first-s`` after the
  first send, as measured), a finished job's successor ``--serve-loop-s`` after it ends;
- **genq**: the opening burst is accepted over ``--accepted-s`` and reaches the engine through
  Celery's consumer, one job at a time at ``--intake`` a second; a successor is accepted
  ``--genq-loop-s`` after its job ends and joins the consumer's line.

A step costs ``--decode-ms``; a step that admits new jobs costs ``--mixed-ms`` more (piecewise
CUDA graphs, new requests in the model runner) plus ``--prefill-ms`` per job admitted. The
defaults are an 8B-shaped model on an H200 at 256 x 256 tokens (docs/performance.md: a wave of
2.56 s, genq without waves 9-12% slower per wave at 15-28 admissions a wave). It prints tok/s,
the ratios, and how many groups a wave is admitted in over four waves mid-run.
"""

from __future__ import annotations

import argparse
import heapq
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from worker.host import scheduler as engine_scheduler  # noqa: E402 - imports vLLM's scheduler classes (CPU build)
from worker.host.scheduler import CONFIG_KEY, GATHER_KEY, HOLD_KEY, _AdmissionWaves  # noqa: E402


class VllmAdmission:
    """vLLM's admission, as far as the model needs it: waiting requests join the batch, first
    come first, while it has free slots."""

    def __init__(self, extra: dict[str, Any], cap: int) -> None:
        self.vllm_config = SimpleNamespace(additional_config=extra)
        self.max_num_running_reqs = cap
        self.running: list[Job] = []
        self.waiting: deque[Job] = deque()

    def schedule(self) -> list[Job]:
        admitted = []
        while self.waiting and len(self.running) < self.max_num_running_reqs:
            job = self.waiting.popleft()
            self.running.append(job)
            admitted.append(job)
        return admitted


class GenqAdmission(_AdmissionWaves, VllmAdmission):
    pass


@dataclass
class Job:
    index: int
    done: int = 0


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def run(args: argparse.Namespace, system: str, extra: dict[str, Any] | None = None) -> dict:
    """One run of ``system`` ("limit", "serve" or "genq"; genq with vLLM's rules when ``extra``
    is None, else genq's with that additional_config): tok/s and mid-run admissions."""
    real_clock = engine_scheduler.time.monotonic
    clock = Clock()
    engine_scheduler.time.monotonic = clock  # the rules read the model's clock
    try:
        return _run(args, system, extra, clock)
    finally:
        engine_scheduler.time.monotonic = real_clock


def _run(args: argparse.Namespace, system: str, extra: dict[str, Any] | None, clock: Clock) -> dict:
    sched: VllmAdmission = (
        GenqAdmission(extra, args.batch) if extra is not None else VllmAdmission({}, args.batch)
    )
    arrivals: list[tuple[float, int]] = []  # (when the job reaches the engine, index)
    intake_free_at = 0.0  # genq: when Celery's consumer takes its next message

    def reach_engine(accepted_at: float, index: int) -> None:
        nonlocal intake_free_at
        if system == "genq":
            intake_free_at = max(intake_free_at, accepted_at) + 1 / args.intake
            heapq.heappush(arrivals, (intake_free_at, index))
        else:
            heapq.heappush(arrivals, (accepted_at, index))

    opening = min(args.in_flight, args.jobs)
    for i in range(opening):
        if system == "limit":
            reach_engine(0.0, i)
        elif system == "serve":
            reach_engine(args.serve_first_s, i)
        else:
            first, last = args.accepted_s
            reach_engine(first + (last - first) * i / max(1, opening - 1), i)
    sent, ended, admissions = opening, 0, []
    if system == "limit":
        for i in range(opening, args.jobs):
            reach_engine(0.0, i)
        sent = args.jobs
    end = 0.0
    while ended < args.jobs:
        while arrivals and arrivals[0][0] <= clock.now:
            _, index = heapq.heappop(arrivals)
            sched.waiting.append(Job(index))
        if not sched.running and not sched.waiting:
            clock.now = arrivals[0][0]  # idle until the next job arrives
            continue
        admitted = sched.schedule()
        step = args.decode_ms
        if admitted:
            step += args.mixed_ms + args.prefill_ms * len(admitted)
            admissions.append((clock.now, len(admitted)))
        clock.now += step / 1000
        for job in sched.running:
            job.done += 1
        finished = [job for job in sched.running if job.done >= args.tokens]
        sched.running = [job for job in sched.running if job.done < args.tokens]
        for _ in finished:
            ended += 1
            end = clock.now
            if sent < args.jobs:
                loop = args.serve_loop_s if system == "serve" else args.genq_loop_s
                reach_engine(clock.now + loop, sent)
                sent += 1
    wave = args.tokens * args.decode_ms / 1000
    middle = [n for t, n in admissions if abs(t - end / 2) < 2 * wave]  # four waves mid-run
    return {
        "tok_s": args.jobs * args.tokens / end,
        "admissions_per_wave": len(middle) / 4,
        "jobs_each": sorted(middle)[len(middle) // 2] if middle else 0,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--jobs", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--in-flight", type=int, default=1024)
    p.add_argument("--decode-ms", type=float, default=9.0)
    p.add_argument("--mixed-ms", type=float, default=10.0)
    p.add_argument("--prefill-ms", type=float, default=1.0)
    p.add_argument("--intake", type=float, default=640.0, help="Celery's consumer, jobs/s")
    p.add_argument("--accepted-s", type=float, nargs=2, default=(0.55, 0.9))
    p.add_argument("--genq-loop-s", type=float, default=0.02)
    p.add_argument("--serve-first-s", type=float, default=1.3)
    p.add_argument("--serve-loop-s", type=float, default=0.01)
    p.add_argument("--gather-ms", default="0,100,250,500", help="genq's gather limits to model")
    p.add_argument("--hold-steps", default="4", help="genq's hold limits to model")
    return p


def main() -> None:
    args = parser().parse_args()

    rows = [("offline limit", run(args, "limit")), ("`vllm serve`", run(args, "serve"))]
    rows.append(("genq, vLLM's scheduler", run(args, "genq", {})))
    wave = args.batch // 4
    for hold in [int(h) for h in args.hold_steps.split(",")]:
        for gather in [int(g) for g in args.gather_ms.split(",")]:
            extra = {CONFIG_KEY: wave, HOLD_KEY: hold, GATHER_KEY: gather}
            rows.append((f"genq, waves of {wave}, hold {hold}, gather {gather} ms",
                         run(args, "genq", extra)))  # fmt: skip
    limit, serve = rows[0][1]["tok_s"], rows[1][1]["tok_s"]
    print(
        "| system | tok/s | x limit | x `vllm serve` | admissions a wave, mid-run | jobs each p50 |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['tok_s']:,.0f} | {r['tok_s'] / limit:.3f} | "
              f"{r['tok_s'] / serve:.3f} | {r['admissions_per_wave']:.1f} | {r['jobs_each']} |")  # fmt: skip


if __name__ == "__main__":
    main()
