"""What one flush of running jobs' output costs the worker's event loop (worker.host.streams): one
Lua script call with every job's delta (what genq does) beside a pipeline of one ``XADD`` per
job (what it did first), same Redis, same jobs, side by side.

    .venv/bin/python ops/bench/stream_flush.py            # 256 jobs, 200 flushes each way
    .venv/bin/python ops/bench/stream_flush.py --jobs 64

CPU time is the process's own (``time.process_time``): what the engine's loop loses per flush.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from genq.contract.constants import stream_key  # noqa: E402
from genq.store.embedded import EmbeddedRedis  # noqa: E402
from genq.store.scripts import APPEND_OUTPUTS  # noqa: E402
from genq.store.streams import output_fields  # noqa: E402


async def measure(url: str, jobs: int, flushes: int) -> dict[str, tuple[float, float]]:
    redis = Redis.from_url(url, decode_responses=True)
    script = redis.register_script(APPEND_OUTPUTS)
    keys = [stream_key(f"job{i}") for i in range(jobs)]
    text = " token token token"  # ~3 tokens per job per 50 ms flush

    async def by_script(n: int) -> None:
        args: list[str | int] = []
        for _ in keys:
            args += [n, text, 3 * n]
        await script(keys=keys, args=args)

    async def by_pipeline(n: int) -> None:
        pipe = redis.pipeline(transaction=False)
        for key in keys:
            pipe.xadd(key, output_fields(n, text, 3 * n))
        await pipe.execute()

    results = {}
    for name, flush in (("script (genq)", by_script), ("pipeline of XADDs", by_pipeline)):
        await redis.flushdb()
        cpu, wall = [], []
        for n in range(flushes):
            c, w = time.process_time(), time.perf_counter()
            await flush(n)
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
        results[name] = (statistics.median(cpu) * 1000, statistics.median(wall) * 1000)
    await redis.aclose()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=256)
    p.add_argument("--flushes", type=int, default=200)
    args = p.parse_args()
    server = EmbeddedRedis(Path(tempfile.mkdtemp())).start()
    try:
        results = asyncio.run(measure(server.url, args.jobs, args.flushes))
    finally:
        server.stop()
    base_cpu = results["script (genq)"][0]
    print(f"one flush of {args.jobs} jobs' deltas, median of {args.flushes}:")
    print("| method | CPU ms | wall ms | CPU x genq |")
    print("|---|---|---|---|")
    for name, (cpu, wall) in results.items():
        print(f"| {name} | {cpu:.2f} | {wall:.2f} | {cpu / base_cpu:.1f} |")


if __name__ == "__main__":
    main()
