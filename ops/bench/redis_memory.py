"""Redis memory per finished job, with genq's own scripts on a real Redis: what a job costs while
its output stream is kept (as long as ``GENQ_STREAM_KEEP_S``) and once only its record is left.

    .venv/bin/python ops/bench/redis_memory.py                        # 1,000 jobs, 1 KB in, 2 KB out
    .venv/bin/python ops/bench/redis_memory.py --entries 200 --output-bytes 8192

Each job goes the way a worker takes it: created (genq.store.jobs), claimed, its text appended
to its stream in ``--entries`` deltas (lua/append_outputs.lua, as the worker's flushes do), and
ended with its output, latencies and last delta (lua/transition.lua). Prints bytes per job as
Redis's ``MEMORY USAGE`` sums them over every key of the jobs (and the change in ``used_memory``),
with every stream kept as long as its job (as genq kept them before GENQ_STREAM_KEEP_S), then
once ``--stream-keep-s`` has passed; and what that makes at a
million jobs a day kept for ``GENQ_RESULT_TTL_S`` (24 h): the sizing rule in README.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from genq.contract.constants import stream_key  # noqa: E402
from genq.contract.schemas import (  # noqa: E402
    JobCreate,
    JobMetrics,
    JobOutput,
    JobRecord,
    JobStatus,
)
from genq.store import scripts, streams  # noqa: E402
from genq.store.embedded import EmbeddedRedis  # noqa: E402
from genq.store.jobs import JobStore  # noqa: E402


async def finish_jobs(store: JobStore, redis: Redis, args: argparse.Namespace) -> None:
    append = redis.register_script(scripts.APPEND_OUTPUTS)
    prompt = "p" * args.prompt_bytes
    text = "o" * args.output_bytes
    step = max(1, len(text) // args.entries)
    pieces = [text[i : i + step] for i in range(0, len(text), step)]
    job_input = JobCreate(prompt=prompt, max_tokens=512).to_input()
    for n in range(args.jobs):
        job_id = f"job-{n:07d}"
        created = time.time()
        await store.create(
            JobRecord(id=job_id, status=JobStatus.QUEUED, created_at=created, input=job_input)
        )
        await store.claim(job_id, "w1", time.time(), lease_s=60)
        *flushed, last = pieces
        for i, piece in enumerate(flushed):
            await append(keys=[stream_key(job_id)], args=[i, piece, i + 1])
        output = JobOutput(text=text, finish_reason="length")
        await store.transition(
            job_id,
            [JobStatus.PROCESSING],
            JobStatus.SUCCEEDED,
            {
                "completed_at": time.time(),
                "output": output.model_dump(mode="json"),
                "metrics": JobMetrics(
                    queue_ms=1.0,
                    ttft_ms=20.0,
                    generation_ms=900.0,
                    total_ms=921.0,
                    prompt_tokens=256,
                    output_tokens=512,
                    tokens_per_s=568.9,
                    first_batch=False,
                ).model_dump(mode="json"),
            },
            last_output=streams.Output(len(flushed), last, len(pieces)),
        )


async def usage(redis: Redis) -> tuple[int, int, int]:
    """(bytes over every job key by MEMORY USAGE, keys, used_memory)."""
    total = keys = 0
    async for key in redis.scan_iter(match="genq:job:*", count=1000):
        total += await redis.memory_usage(key, samples=0) or 0
        keys += 1
    return total, keys, int((await redis.info("memory"))["used_memory"])


async def run(args: argparse.Namespace, url: str, keep_s: int) -> tuple[int, int, int]:
    """Bytes over every job key, keys and the change in used_memory, once every stream kept for
    ``keep_s`` is gone (a ``keep_s`` as long as the records: the streams all there)."""
    redis = Redis.from_url(url, decode_responses=True)
    try:
        await redis.flushdb()
        base = int((await redis.info("memory"))["used_memory"])
        store = JobStore(redis, ttl_s=24 * 3600, stream_keep_s=keep_s)
        await finish_jobs(store, redis, args)
        if keep_s < 24 * 3600:
            await asyncio.sleep(keep_s + 1.5)
        total, keys, used = await usage(redis)
        return total, keys, used - base
    finally:
        await redis.aclose()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--prompt-bytes", type=int, default=1024)
    p.add_argument("--output-bytes", type=int, default=2048)
    p.add_argument("--entries", type=int, default=40, help="output deltas per job")
    p.add_argument("--stream-keep-s", type=int, default=2, help="GENQ_STREAM_KEEP_S for the run")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp)).start()
        try:
            result = {
                "stream kept": asyncio.run(run(args, server.url, 24 * 3600)),
                "record only": asyncio.run(run(args, server.url, args.stream_keep_s)),
            }
        finally:
            server.stop()
    print(
        f"{args.jobs:,} finished jobs: {args.prompt_bytes} B prompt, {args.output_bytes} B output "
        f"in {args.entries} stream entries"
    )
    print(f"{'':<14}{'B/job (MEMORY USAGE)':>22}{'keys/job':>10}{'B/job (used_memory)':>22}")
    for name in ("stream kept", "record only"):
        total, keys, used = result[name]
        print(
            f"{name:<14}{total / args.jobs:>22,.0f}{keys / args.jobs:>10.1f}"
            f"{used / args.jobs:>22,.0f}"
        )
    per_job = result["record only"][0] / args.jobs
    print(
        f"sizing: 1,000,000 jobs/day x {per_job:,.0f} B x 1 day kept = "
        f"{per_job * 1e6 / 2**30:.1f} GiB (+ streams of jobs ended in the last GENQ_STREAM_KEEP_S)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
