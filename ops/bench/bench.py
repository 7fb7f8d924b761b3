"""genq beside the engine's own limit and the seed's one-at-a-time pattern: one run, one machine.

    .venv/bin/python ops/bench/bench.py [--prompts 64] [--tokens 64] [--concurrency 1,4,16,32,64]

Systems, each alone on the machine, same model, same prompts, same engine options:
  engine limit   vLLM offline ``LLM.generate(all prompts)``             (ops/bench/offline.py)
  seed pattern   one blocking ``generate`` per request, one at a time   (ops/bench/offline.py)
  genq           HTTP ``POST /generate`` -> API -> Redis -> Celery worker -> shared AsyncLLM,
                 with ``c`` requests in flight
Fixed shape: every job asks for exactly ``--tokens`` output tokens (min_tokens = max_tokens),
its prompt asked as one chat turn (the offline runs render the same chat template).
Also measured: the worker's time to ready by phase, and the seed's curl after warm-up.
Prints a table; ``--out`` writes the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from genq.constants import WORKERS_SET, worker_key  # noqa: E402
from genq.model import prepare_default_model  # noqa: E402
from genq.redis_server import EmbeddedRedis, free_port  # noqa: E402
from genq.settings import WorkerSettings  # noqa: E402

SEED_BODY = {"prompt": "What is the capital of France?"}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def make_prompts(n: int, tokens: int) -> list[dict]:
    topics = [
        "a lighthouse",
        "the sea",
        "a clockmaker",
        "a city at night",
        "a long journey",
        "a garden",
        "the mountains",
        "an old library",
    ]
    return [
        {
            "prompt": f"Write story number {i} about {topics[i % len(topics)]}.",
            "max_tokens": tokens,
            "min_tokens": tokens,
        }
        for i in range(n)
    ]


def run_offline(
    model: str, prompts_file: Path, max_num_seqs: int, engine_args: str, seed_n: int
) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "ops/bench/offline.py"),
            "--model",
            model,
            "--prompts-file",
            str(prompts_file),
            "--max-num-seqs",
            str(max_num_seqs),
            "--engine-args",
            engine_args,
            "--seed-requests",
            str(seed_n),
            "--chat",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"offline run failed:\n{out.stderr[-4000:]}")
    marker = "GENQ-BENCH-RESULT "
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith(marker)]
    return json.loads(line[len(marker) :])


class Stack:
    """Redis + API + one worker, as separate processes (what `genq up` runs, minus Flower)."""

    def __init__(self, workdir: Path, worker_concurrency: int, engine_args: str):
        self.redis = EmbeddedRedis(workdir).start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis.url,
            "GENQ_API_PORT": str(self.port),
            "GENQ_WORKER_CONCURRENCY": str(worker_concurrency),
            "GENQ_ENGINE_ARGS": engine_args,
            "GENQ_LOG_LEVEL": "WARNING",
        }
        self.logs = workdir
        self.procs = [self._start("api"), self._start("worker")]

    def _start(self, role: str) -> subprocess.Popen:
        with (self.logs / f"{role}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "genq.cli", role],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def wait_ready(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a process exited; logs in {self.logs}")
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the worker did not get warm")

    def worker_info(self) -> dict:
        client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        (name,) = client.smembers(WORKERS_SET)
        return json.loads(client.get(worker_key(name)))

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(60)
        self.redis.stop()


def run_genq(url: str, jobs: list[dict], concurrency: int) -> dict:
    """``concurrency`` requests in flight from one asyncio client (aiohttp: a load generator
    must not be the bottleneck; a thread per request in one Python process was)."""
    import aiohttp  # noqa: PLC0415 - a vLLM dependency, present wherever the worker runs

    async def drive() -> tuple[list[tuple[float, float, str]], float]:
        connector = aiohttp.TCPConnector(limit=concurrency + 4)
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            todo = list(reversed(jobs))
            done: list[tuple[float, float, str]] = []

            async def client() -> None:
                while todo:
                    job = todo.pop()
                    sent = time.time()
                    async with session.post(f"{url}/generate", json=job) as r:
                        r.raise_for_status()
                        body = await r.json()
                    done.append((sent, time.time(), body["id"]))

            t0 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            return done, time.perf_counter() - t0

    results, wall = asyncio.run(drive())
    with httpx.Client(timeout=60) as client:
        records = [client.get(f"{url}/v1/jobs/{job_id}").json() for _, _, job_id in results]
    metrics = [r["metrics"] for r in records]
    latencies = [recv - sent for sent, recv, _ in results]
    created = [datetime.fromisoformat(r["created_at"]).timestamp() for r in records]
    completed = [datetime.fromisoformat(r["completed_at"]).timestamp() for r in records]
    tokens = sum(m["output_tokens"] for m in metrics)
    return {
        "concurrency": concurrency,
        "jobs": len(jobs),
        "seconds": wall,
        "output_tokens": tokens,
        # first accepted -> last stored: throughput as the server sees it, without the client
        "server_seconds": max(completed) - min(created),
        "latency_s": latencies,
        "ttft_ms": [m["ttft_ms"] for m in metrics],
        "queue_ms": [m["queue_ms"] for m in metrics],
        # What genq adds to a job: the client's latency minus the engine's time for it, and
        # where: client send -> API accept, and result stored -> client has it.
        "overhead_ms": [lat * 1000 - m["generation_ms"] for lat, m in zip(latencies, metrics)],
        "send_to_accept_ms": [(c - s) * 1000 for (s, _, _), c in zip(results, created)],
        "stored_to_client_ms": [(r - c) * 1000 for (_, r, _), c in zip(results, completed)],
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--concurrency", default="1,4,16,32,64")
    p.add_argument("--worker-concurrency", type=int, default=64)
    p.add_argument("--seed-requests", type=int, default=8)
    p.add_argument("--engine-args", default=os.environ.get("GENQ_ENGINE_ARGS", "{}"))
    p.add_argument("--out", type=Path)
    p.add_argument("--logs", type=Path, help="copy the API and worker logs here at the end")
    args = p.parse_args()

    settings = WorkerSettings()
    model = settings.model or str(prepare_default_model(settings.cache_dir))
    jobs = make_prompts(args.prompts, args.tokens)
    levels = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="genq-bench-"))
    (work / "prompts.json").write_text(json.dumps(jobs))

    print(f"engine alone: {args.prompts} prompts x {args.tokens} tokens ...", flush=True)
    offline = run_offline(
        model, work / "prompts.json", args.worker_concurrency, args.engine_args, args.seed_requests
    )

    print("genq: starting Redis, API, worker ...", flush=True)
    t0 = time.monotonic()
    stack = Stack(work, args.worker_concurrency, args.engine_args)
    try:
        stack.wait_ready()
        ready_s = time.monotonic() - t0
        info = stack.worker_info()
        seed_curl = []
        for _ in range(21):
            t1 = time.perf_counter()
            httpx.post(f"{stack.url}/generate", json=SEED_BODY, timeout=60).raise_for_status()
            seed_curl.append(time.perf_counter() - t1)
        runs = []
        for c in levels:
            subset = jobs if c > 1 else jobs[: args.seed_requests]
            print(f"genq: concurrency {c} ...", flush=True)
            runs.append(run_genq(stack.url, subset, c))
    finally:
        stack.stop()
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("*.log"):
                shutil.copy(log, args.logs / log.name)

    limit = offline["limit"]
    limit_tps = limit["output_tokens"] / limit["seconds"]
    rows = [
        (
            "engine limit (offline, all at once)",
            "all",
            limit["jobs"],
            limit_tps,
            limit["jobs"] / limit["seconds"],
            None,
            None,
            None,
            None,
        )
    ]
    seed = offline["seed"]
    seed_lat = [s * 1000 for s in seed["latencies_s"]]
    rows.append(
        (
            "seed pattern (one generate at a time)",
            1,
            seed["jobs"],
            seed["output_tokens"] / seed["seconds"],
            seed["jobs"] / seed["seconds"],
            seed_lat,
            None,
            None,
            None,
        )
    )
    for r in runs:
        rows.append(
            (
                "genq (HTTP -> Redis -> worker)",
                r["concurrency"],
                r["jobs"],
                r["output_tokens"] / r["seconds"],
                r["jobs"] / r["seconds"],
                [x * 1000 for x in r["latency_s"]],
                r["ttft_ms"],
                r["queue_ms"],
                r["overhead_ms"],
            )
        )

    print()
    print(
        f"machine: {platform.node()} {os.cpu_count()} cores; model {Path(model).name}; "
        f"{args.tokens} output tokens per job"
    )
    head = (
        "| system | conc. | jobs | out tok/s | x limit | jobs/s | latency p50/p95/p99 ms "
        "| TTFT p50/p95 ms | queue p50 ms | overhead p50/p99 ms |"
    )
    print(head)
    print("|" + "---|" * 10)
    fmt3 = lambda v: "/".join(f"{pct(v, q):.0f}" for q in (50, 95, 99)) if v else "-"  # noqa: E731
    fmt2 = lambda v, a, b: f"{pct(v, a):.0f}/{pct(v, b):.0f}" if v else "-"  # noqa: E731
    for name, c, n, tps, jps, lat, ttft, queue, over in rows:
        print(
            f"| {name} | {c} | {n} | {tps:.0f} | {tps / limit_tps:.2f} | {jps:.2f} | {fmt3(lat)} "
            f"| {fmt2(ttft, 50, 95)} | {f'{pct(queue, 50):.0f}' if queue else '-'} "
            f"| {fmt2(over, 50, 99)} |"
        )
    print()
    print(
        "| genq conc. | server tok/s (first accepted -> last stored) | x limit "
        "| client send -> API accept p50/p99 ms | result stored -> client p50/p99 ms |"
    )
    print("|---|---|---|---|---|")
    for r in runs:
        server_tps = r["output_tokens"] / r["server_seconds"]
        print(
            f"| {r['concurrency']} | {server_tps:.0f} | {server_tps / limit_tps:.2f} "
            f"| {fmt2(r['send_to_accept_ms'], 50, 99)} | {fmt2(r['stored_to_client_ms'], 50, 99)} |"
        )
    startup = info["startup_s"]
    print()
    print(
        "worker time to ready (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in startup.items())
        + f"; stack start to /readyz 200: {ready_s:.1f}; bare LLM() construction: "
        f"{offline['construct_s']:.1f}"
    )
    print(
        f"warm-up request: {info['warmup_latency_ms']:.0f} ms; seed curl after warm-up: "
        f"first {seed_curl[0] * 1000:.0f} ms, median of next 20 "
        f"{statistics.median(seed_curl[1:]) * 1000:.0f} ms"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "model": model,
                    "offline": offline,
                    "genq": runs,
                    "worker": info,
                    "ready_s": ready_s,
                    "seed_curl_s": seed_curl,
                },
                indent=1,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
