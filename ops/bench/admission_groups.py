"""How many groups a staggered burst enters the engine's batch in, with admission in waves and
without (worker/host/scheduler.py; docs/performance.md, "Admission in waves"). One engine, here:

    .venv/bin/python ops/bench/admission_groups.py --wave 4   # then --wave 0: vLLM's scheduler

N jobs of T forced tokens are sent S seconds apart to an engine batching B; jobs whose first
tokens come within 20 ms of each other count as one group (one admission).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from genq.contract.schemas import JobInput, SamplingOptions  # noqa: E402
from genq.contract.settings import WorkerSettings  # noqa: E402
from ops.bench.report import admission_sizes  # noqa: E402
from worker.host.engine import Engine, Progress  # noqa: E402
from worker.model_files import prepare_default_model  # noqa: E402

GAP_S = 0.020  # first tokens closer than this: one admission (CPU steps take 30-100 ms)


async def first_tokens(engine: Engine, jobs: int, tokens: int, spacing_s: float) -> list[float]:
    t0 = time.perf_counter()

    async def one(i: int) -> float:
        await asyncio.sleep(i * spacing_s)
        job = JobInput(
            prompt=f"Count to ten, {i}.",
            sampling=SamplingOptions(max_tokens=tokens, min_tokens=tokens),
        )
        progress = Progress()
        result = await engine.generate(f"job-{i}", job, progress)
        return progress.started + (result.ttft_s or 0.0) - t0

    return sorted(await asyncio.gather(*(one(i) for i in range(jobs))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wave", type=int, required=True, help="0: vLLM's own scheduler")
    p.add_argument(
        "--gather-ms", type=int, help="gather a burst up to this long (0: off; unset: default)"
    )
    p.add_argument("--batch", type=int, default=8, help="the engine's max_num_seqs")
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--spacing-s", type=float, default=0.03)
    args = p.parse_args()
    settings = WorkerSettings()
    model = settings.model or str(prepare_default_model(settings.cache_dir))
    engine = Engine(
        model,
        settings.engine_args,
        max_num_seqs=args.batch,
        admission_wave=args.wave,
        admission_gather_ms=args.gather_ms,
    )
    engine.start()
    try:
        firsts = engine.submit(
            first_tokens(engine, args.jobs, args.tokens, args.spacing_s)
        ).result()
    finally:
        engine.stop()
    sizes = admission_sizes(firsts, GAP_S)
    gather = "default" if args.gather_ms is None else f"{args.gather_ms} ms"
    print(f"wave {args.wave}, gather {gather}: {len(sizes)} groups, sizes {sizes}")


if __name__ == "__main__":
    main()
