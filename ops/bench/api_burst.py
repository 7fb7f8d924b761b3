"""How fast a burst of synchronous requests reaches the queue: N ``POST /generate`` sent at once
into a fresh API with no worker attached, and a reader that takes each job's message off the
queue the moment it lands (docs/performance.md, "A burst's creates go to Redis together").

    .venv/bin/python ops/bench/api_burst.py [--jobs 1024] [--api-workers 2] [--rounds 3]

Per round: when the 1st, (N/4)-th and N-th message reached the queue (seconds after the first
send), each job's ``created_at`` -> on the queue p50/p99, and the Redis connections open at the
end (the API's, the reader's and this script's). Nobody answers the requests (no worker): the
client gives up on them after ``--wait-s``. The first round meets an API whose connection pools
are empty, as a freshly started stack does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from genq.contract.constants import job_key  # noqa: E402
from genq.store.embedded import EmbeddedRedis, free_port  # noqa: E402
from ops.bench.api_ceiling import BODY, QUEUE, serve  # noqa: E402
from ops.bench.report import pct  # noqa: E402


class QueueReader(threading.Thread):
    """Takes every message off the queue as it lands: job id -> time it was there."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.landed: dict[str, float] = {}
        self.stopped = False

    def run(self) -> None:
        while not self.stopped:
            if got := self.client.brpop([QUEUE], timeout=0.2):
                self.landed[json.loads(got[1])["headers"]["id"]] = time.time()


async def burst(url: str, jobs: int, wait_s: float) -> float:
    """Sends ``jobs`` requests at once; returns the time of the first send."""
    connector = aiohttp.TCPConnector(limit=jobs + 4)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            try:
                await asyncio.wait_for(session.post(f"{url}/generate", json=BODY), wait_s)
            except asyncio.TimeoutError:
                pass  # no worker: nobody answers

        t0 = time.time()
        await asyncio.gather(*(one() for _ in range(jobs)))
        return t0


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=1024)
    p.add_argument("--api-workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--wait-s", type=float, default=3.0)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="genq-api-burst-"))
    server = EmbeddedRedis(work).start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    port = free_port()
    proc = serve("genq", args.api_workers, server.url, port, work / "api.log", {}, {})
    url = f"http://127.0.0.1:{port}"
    reader = QueueReader(server.url)
    reader.start()
    print(
        f"{args.jobs} POST /generate at once, {args.api_workers} API processes, no worker\n\n"
        "| round | 1st / N/4-th / N-th on the queue (s) | created_at -> queue p50/p99 ms "
        "| Redis connections |\n|---|---|---|---|"
    )
    try:
        for n in range(args.rounds):
            client.flushdb()
            reader.landed.clear()
            t0 = asyncio.run(burst(url, args.jobs, args.wait_s))
            time.sleep(1)  # the last messages land
            landed = dict(reader.landed)
            ids = list(landed)
            created = client.pipeline()
            for job_id in ids:
                created.hget(job_key(job_id), "created_at")
            waits = [
                (landed[job_id] - float(c)) * 1000
                for job_id, c in zip(ids, created.execute())
                if c is not None
            ]
            times = sorted(t - t0 for t in landed.values())
            marks = [times[0], times[max(len(times) // 4 - 1, 0)], times[-1]]
            print(
                f"| {n + 1}{' (fresh API)' if n == 0 else ''} "
                f"| {'/'.join(f'{t:.2f}' for t in marks)} ({len(times)} of {args.jobs}) "
                f"| {pct(waits, 50):.0f}/{pct(waits, 99):.0f} "
                f"| {client.info('clients')['connected_clients']} |",
                flush=True,
            )
    finally:
        reader.stopped = True
        proc.terminate()
        proc.wait(30)
        server.stop()


if __name__ == "__main__":
    main()
