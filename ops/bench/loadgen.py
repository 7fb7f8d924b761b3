"""Closed-loop HTTP load: exactly ``c`` requests in flight, a new one sent as one returns.

One asyncio client (aiohttp) per run: a load generator must not be the bottleneck, and one thread
per request in a Python process was (an early GPU run measured 0.58x where this client gives
0.67x on the same code). Two targets:

- genq: ``POST /generate`` (submit, wait, answer), then each job's record from
  ``GET /v1/jobs/{id}`` for the server-side metrics (queue wait, engine time, tokens);
- an OpenAI-compatible server (``vllm serve``): ``POST /v1/chat/completions`` with
  ``stream: true``, so the client sees the first token (TTFT) and counts the tokens from ``usage``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp

Send = Callable[[aiohttp.ClientSession, dict], Awaitable[dict]]


async def _closed_loop(
    jobs: list[dict], concurrency: int, send: Send, think_s: float = 0.0, ramp_s: float = 0.0
) -> tuple[list[dict], float]:
    """``think_s``: each client's pause after an answer before its next request. ``ramp_s``:
    the c clients start evenly over this many seconds instead of at once, so the first burst
    reaches the server over time, as a queue hands a burst on to its engine."""
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        todo = list(reversed(jobs))
        done: list[dict] = []

        async def client(k: int) -> None:
            if ramp_s:
                await asyncio.sleep(k * ramp_s / concurrency)
            while todo:
                sent = time.perf_counter() - t0
                result = await send(session, todo.pop())
                done.append(result | {"span_s": [sent, time.perf_counter() - t0]})
                if think_s:
                    await asyncio.sleep(think_s)

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        return done, time.perf_counter() - t0


def run_genq(
    url: str,
    jobs: list[dict],
    concurrency: int,
    keep_records: bool = False,
    think_s: float = 0.0,
    loaded: Callable[[], None] = lambda: None,
    ramp_s: float = 0.0,
) -> dict:
    """``keep_records``: the result has each job's ``records`` too (model, created, completed,
    metrics), for per-model sums (ops/bench/scaleout.py). ``think_s``, ``ramp_s``: see
    ``_closed_loop``.
    ``loaded`` is called once the last job has answered, before the records are read back one
    by one (a HostWatch's ``stop``: that read is no part of the load)."""

    async def send(session: aiohttp.ClientSession, job: dict) -> dict:
        body = {k: job[k] for k in ("prompt", "max_tokens", "min_tokens", "model") if k in job}
        sent = time.time()
        async with session.post(f"{url}/generate", json=body) as r:
            r.raise_for_status()
            answer = await r.json()
        return {"sent": sent, "received": time.time(), "id": answer["id"]}

    async def drive() -> tuple[list[dict], float, list[dict]]:
        results, wall = await _closed_loop(jobs, concurrency, send, think_s, ramp_s)
        loaded()
        async with aiohttp.ClientSession() as session:
            records = []
            for r in results:
                async with session.get(f"{url}/v1/jobs/{r['id']}") as resp:
                    records.append(await resp.json())
        return results, wall, records

    results, wall, records = asyncio.run(drive())
    metrics = [r["metrics"] for r in records]
    latencies = [r["received"] - r["sent"] for r in results]
    created = [datetime.fromisoformat(r["created_at"]).timestamp() for r in records]
    completed = [datetime.fromisoformat(r["completed_at"]).timestamp() for r in records]
    kept = [
        {
            "model": r["model"],
            "created": c0,
            "completed": c1,
            "metrics": m,
        }
        for r, c0, c1, m in zip(records, created, completed, metrics)
    ]
    return ({"records": kept} if keep_records else {}) | {
        "concurrency": concurrency,
        "jobs": len(jobs),
        "seconds": wall,
        "output_tokens": sum(m["output_tokens"] for m in metrics),
        # first accepted -> last stored: throughput as the server sees it, no client in it
        "server_seconds": max(completed) - min(created),
        "latency_s": latencies,
        # each job's [sent, answered] from the run's start, and its tokens (report.steady_tps)
        "span_s": [r["span_s"] for r in results],
        "job_tokens": [m["output_tokens"] for m in metrics],
        "prompt_tokens": [m.get("prompt_tokens") for m in metrics],
        # what a streaming user would wait for the first token: queued + engine's first token
        "ttft_s": [(m["queue_ms"] + m["ttft_ms"]) / 1000 for m in metrics],
        "queue_ms": [m["queue_ms"] for m in metrics],
        # What genq adds to a job: the client's latency minus the engine's time for it, and
        # where: client send -> API accept, and result stored -> client has it.
        "overhead_ms": [lat * 1000 - m["generation_ms"] for lat, m in zip(latencies, metrics)],
        "send_to_accept_ms": [(c - r["sent"]) * 1000 for r, c in zip(results, created)],
        "stored_to_client_ms": [(r["received"] - c) * 1000 for r, c in zip(results, completed)],
    }


def run_openai(
    url: str,
    model: str,
    jobs: list[dict],
    concurrency: int,
    stream: bool,
    ramp_s: float = 0.0,
    think_s: float = 0.0,
) -> dict:
    """``think_s``, ``ramp_s``: see ``_closed_loop``."""

    async def send(session: aiohttp.ClientSession, job: dict) -> dict:
        if not stream:
            return await send_plain(session, job)
        body = {
            "model": model,
            "messages": [{"role": "user", "content": job["prompt"]}],
            "max_tokens": job["max_tokens"],
            "min_tokens": job["min_tokens"],  # a vLLM extension of the OpenAI request
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        sent = time.perf_counter()
        ttft, tokens, prompt = None, 0, None
        async with session.post(f"{url}/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            async for raw in r.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                chunk: dict[str, Any] = json.loads(line[6:])
                if ttft is None and any(c["delta"].get("content") for c in chunk["choices"]):
                    ttft = time.perf_counter() - sent
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                    prompt = chunk["usage"]["prompt_tokens"]
        return {
            "latency_s": time.perf_counter() - sent,
            "ttft_s": ttft,
            "tokens": tokens,
            "prompt_tokens": prompt,
        }

    async def send_plain(session: aiohttp.ClientSession, job: dict) -> dict:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": job["prompt"]}],
            "max_tokens": job["max_tokens"],
            "min_tokens": job["min_tokens"],
            "temperature": 0,
        }
        sent = time.perf_counter()
        async with session.post(f"{url}/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            answer = await r.json()
        usage = answer["usage"]
        return {
            "latency_s": time.perf_counter() - sent,
            "ttft_s": None,
            "tokens": usage["completion_tokens"],
            "prompt_tokens": usage["prompt_tokens"],
        }

    results, wall = asyncio.run(_closed_loop(jobs, concurrency, send, think_s, ramp_s))
    return {
        "concurrency": concurrency,
        "jobs": len(jobs),
        "seconds": wall,
        "output_tokens": sum(r["tokens"] for r in results),
        "latency_s": [r["latency_s"] for r in results],
        "ttft_s": [r["ttft_s"] for r in results],
        "span_s": [r["span_s"] for r in results],
        "job_tokens": [r["tokens"] for r in results],
        "prompt_tokens": [r["prompt_tokens"] for r in results],
    }
